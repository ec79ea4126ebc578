// Writes the inputs of bench/gptq_layer.sh: one LLaMA-named 4096 x 4096 linear (F16, as checkpoints ship it) in
// DIR/layer.safetensors, and 4096 calibration tokens of its input (F32, correlated columns with a few outlier
// channels, as real activations have) in DIR/calib.safetensors.
//   make_gptq_layer DIR [N] [TOKENS]
#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "qz/core/half.hpp"
#include "qz/io/safetensors.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: make_gptq_layer DIR [N=4096] [TOKENS=4096]\n");
    return 1;
  }
  const std::filesystem::path dir = argv[1];
  const size_t n = argc > 2 ? std::stoul(argv[2]) : 4096, tokens = argc > 3 ? std::stoul(argv[3]) : 4096;
  std::filesystem::create_directories(dir);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);

  std::vector<uint8_t> w(n * n * 2);
  for (size_t i = 0; i < n * n; ++i) {
    const uint16_t h = qz::fp32_to_fp16(0.02f * g(rng));
    std::memcpy(w.data() + 2 * i, &h, 2);
  }
  qz::write_safetensors(dir / "layer.safetensors",
                        {{"model.layers.0.self_attn.q_proj.weight", qz::DType::F16, {n, n}, std::move(w)}});

  // x = z B (64 shared factors) + noise, with every 97th column 20x larger.
  constexpr size_t kFactors = 64;
  std::vector<float> basis(kFactors * n);
  for (auto& b : basis) b = g(rng) / 8.0f;
  std::vector<uint8_t> x(tokens * n * 4);
  std::vector<float> row(n), z(kFactors);
  for (size_t t = 0; t < tokens; ++t) {
    for (auto& v : z) v = g(rng);
    for (size_t c = 0; c < n; ++c) {
      float v = 0.3f * g(rng);
      for (size_t k = 0; k < kFactors; ++k) v += z[k] * basis[k * n + c];
      row[c] = c % 97 == 0 ? 20.0f * v : v;
    }
    std::memcpy(x.data() + t * n * 4, row.data(), n * 4);
  }
  qz::write_safetensors(dir / "calib.safetensors",
                        {{"model.layers.0.self_attn.q_proj", qz::DType::F32, {tokens, n}, std::move(x)}});
  fmt::print("wrote {} and {}\n", (dir / "layer.safetensors").string(), (dir / "calib.safetensors").string());
  return 0;
}
