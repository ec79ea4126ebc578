// AWQ's searches on one scaling group of a 2048-wide model (q, k, v: 3 x 2048 x 2048, 512 calibration tokens) and
// the clipping search of one 2048 x 2048 linear, into int4 groups of 128 and Q4_K: seconds per search and GFLOP/s of
// the output products (20 alphas x tokens x 2 x weights; clipping: 10 shrinks x tokens x 2 x weights).
//   ./build/bench/bench_awq
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "qz/core/parallel.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/methods/awq.hpp"

namespace {

constexpr size_t kN = 2048, kTokens = 512;

const std::vector<float>& activations() {
  static const std::vector<float> x = [] {
    std::mt19937 rng(5);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(kTokens * kN);
    for (size_t i = 0; i < v.size(); ++i) v[i] = d(rng) * ((i % kN) % 61 == 3 ? 20.0f : 1.0f);
    return v;
  }();
  return x;
}

const std::vector<float>& weights() {
  static const std::vector<float> w = [] {
    std::mt19937 rng(6);
    std::normal_distribution<float> d(0.0f, 0.02f);
    std::vector<float> v(3 * kN * kN);
    for (auto& x : v) x = d(rng);
    return v;
  }();
  return w;
}

// (A template so that the benchmark also builds against the single-threaded first version, for before/after.)
template <typename Config = qz::AwqConfig>
Config config(unsigned threads) {
  Config cfg;
  if constexpr (requires(Config c) { c.threads = 1u; }) cfg.threads = threads;
  return cfg;
}

const char* format_name(int64_t i) { return i == 0 ? "int4_asym_g128" : "Q4_K"; }

void BM_AwqScaleSearch(benchmark::State& state) {
  const auto f = qz::find_format(format_name(state.range(0)), kN);
  const unsigned threads = state.range(1) ? qz::hardware_threads() : 1;
  const auto& w = weights();
  const std::vector<qz::AwqLinear> group = {{w.data(), kN, f}, {w.data() + kN * kN, kN, f}, {w.data() + 2 * kN * kN, kN, f}};
  for (auto _ : state) {
    auto r = qz::awq_search_scales(group, activations().data(), kTokens, kN, config(threads));
    benchmark::DoNotOptimize(r.scales.data());
  }
  state.SetLabel(std::string(format_name(state.range(0))) + ", " + std::to_string(threads) + " thread(s)");
  state.counters["GFLOP/s"] = benchmark::Counter(20.0 * kTokens * 2.0 * 3.0 * kN * kN * 1e-9 * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AwqScaleSearch)->ArgsProduct({{0, 1}, {0, 1}})->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

void BM_AwqClipSearch(benchmark::State& state) {
  const auto f = qz::find_format(format_name(state.range(0)), kN);
  const unsigned threads = state.range(1) ? qz::hardware_threads() : 1;
  for (auto _ : state) {
    auto b = qz::awq_search_clip({weights().data(), kN, f}, activations().data(), kTokens, kN, 32, config(threads));
    benchmark::DoNotOptimize(b.data());
  }
  state.SetLabel(std::string(format_name(state.range(0))) + ", " + std::to_string(threads) + " thread(s)");
  state.counters["GFLOP/s"] = benchmark::Counter(10.0 * kTokens * 2.0 * kN * kN * 1e-9 * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AwqClipSearch)->ArgsProduct({{0, 1}, {0, 1}})->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
