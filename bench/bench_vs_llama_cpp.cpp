// Single-thread quantization speed of llama.cpp's own quantizers (ggml_quantize_chunk from the libggml-base.so that
// node-llama-cpp ships, the llama.cpp behind llama-quantize) beside ours, on the same machine and data, with a
// byte-for-byte comparison of the outputs. Skips, saying so, when the library is absent (tools/setup.sh installs it).
//   ./build/bench/bench_vs_llama_cpp [path/to/libggml-base.so]
#include <dlfcn.h>
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "qz/formats/format_table.hpp"

namespace {

struct GgmlInitParams {
  size_t mem_size;
  void* mem_buffer;
  bool no_alloc;
};
using InitFn = void* (*)(GgmlInitParams);
using FreeFn = void (*)(void*);
using QuantizeChunkFn = size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);

template <typename F>
double seconds(F&& f, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string lib = argc > 1 ? argv[1]
                                   : std::string(QZ_SOURCE_DIR) +
                                         "/tests/integration/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so";
  void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    fmt::print("skipped: cannot load {} ({})\n", lib, dlerror());
    return 0;
  }
  auto init = reinterpret_cast<InitFn>(dlsym(h, "ggml_init"));
  auto free_ctx = reinterpret_cast<FreeFn>(dlsym(h, "ggml_free"));
  auto quantize_chunk = reinterpret_cast<QuantizeChunkFn>(dlsym(h, "ggml_quantize_chunk"));
  if (!init || !free_ctx || !quantize_chunk) {
    fmt::print("skipped: {} lacks ggml_init / ggml_quantize_chunk\n", lib);
    return 0;
  }
  void* ctx = init({1 << 20, nullptr, false});  // fills ggml's fp16 tables, which its K-quants read

  constexpr size_t kRows = 256, kCols = 4096;
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::lognormal_distribution<float> li(0.0f, 1.0f);
  std::vector<float> x(kRows * kCols), imp(kCols);
  for (auto& v : x) v = d(rng);
  for (auto& v : imp) v = li(rng);
  const double mb = static_cast<double>(x.size() * sizeof(float)) / 1e6;

  fmt::print("{:<6} {:>8}  {:>12} {:>12} {:>8}  {}\n", "type", "imatrix", "llama.cpp", "quantize", "speedup", "bytes");
  for (const char* name : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}) {
    const auto f = qz::find_format(name);
    const int type = static_cast<int>(f->storage_type());
    for (const bool weighted : {false, true}) {
      const float* w = weighted ? imp.data() : nullptr;
      std::vector<uint8_t> ref(kRows * f->row_bytes(kCols)), ours(ref.size());
      const double t_ref = seconds([&] { quantize_chunk(type, x.data(), ref.data(), 0, kRows, kCols, w); }, 10);
      const double t_ours = seconds(
          [&] {
            for (size_t r = 0; r < kRows; ++r) f->quantize_row(x.data() + r * kCols, ours.data() + r * f->row_bytes(kCols), kCols, w);
          },
          10);
      fmt::print("{:<6} {:>8}  {:>9.1f} MB/s {:>9.1f} MB/s {:>7.2f}x  {}\n", name, weighted ? "yes" : "no", mb / t_ref,
                 mb / t_ours, t_ref / t_ours, ref == ours ? "identical" : "DIFFERENT");
    }
  }
  free_ctx(ctx);
  return 0;
}
