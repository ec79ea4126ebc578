// The engine's forward pass (engine/transformer.hpp), prompt processing: one sequence of 512 tokens through a
// synthetic ~300M-parameter LLaMA (6 layers, 2048 wide, MLP 5632, 16 heads / 8 KV heads, vocabulary 4096; the
// size issue 13 quotes llama.cpp's F16 rate for), tokens per second and GFLOP/s of the matrix products.
//   ./build/bench/bench_engine
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "qz/core/parallel.hpp"
#include "qz/engine/model_weights.hpp"
#include "qz/engine/transformer.hpp"
#include "qz/model/demo_checkpoint.hpp"

namespace {

constexpr size_t kTokens = 512;

const qz::ModelWeights& weights() {
  static const std::unique_ptr<qz::ModelWeights> w = [] {
    const auto dir = std::filesystem::temp_directory_path() / "qz-bench-engine";
    if (!std::filesystem::exists(dir / "config.json")) {
      qz::DemoConfig c;
      c.layers = 6;
      c.hidden = 2048;
      c.intermediate = 5632;
      c.heads = 16;
      c.kv_heads = 8;
      c.vocab = 4096;
      qz::write_demo_checkpoint(dir, c);
    }
    return qz::ModelWeights::open(dir);
  }();
  return *w;
}

void BM_PromptTokens(benchmark::State& state) {
  const auto threads = static_cast<unsigned>(state.range(0) == 0 ? qz::hardware_threads() : state.range(0));
  const qz::Transformer t(weights(), threads);
  std::mt19937 rng(1);
  std::vector<int32_t> seq(kTokens);
  for (auto& id : seq) id = static_cast<int32_t>(rng() % t.vocab_size());
  for (auto _ : state) {
    const auto logits = t.logits({seq});
    benchmark::DoNotOptimize(logits.data());
  }
  // 2 flops per weight per token in the linears and the head (attention's own products are not counted).
  const double linear = 6.0 * (2.0 * 2048 * 2048 + 2.0 * 2048 * 1024 + 3.0 * 2048 * 5632) + 2048.0 * 4096;
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kTokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOPs"] =
      benchmark::Counter(2.0 * linear * kTokens / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::to_string(kTokens) + " tokens, " + std::to_string(threads) + " threads");
}

}  // namespace

BENCHMARK(BM_PromptTokens)->Arg(1)->Arg(0)->Iterations(3)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK_MAIN();
