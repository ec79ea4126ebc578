// MB/s of F32 input quantized (and dequantized) per format, on one thread and on all threads.
//   ./build/bench/bench_formats --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "qz/core/parallel.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/methods/rtn.hpp"

namespace {

constexpr size_t kRows = 1024, kCols = 4096;  // 16 MiB of F32 per iteration

const std::vector<float>& weights() {
  static const std::vector<float> w = [] {
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    std::vector<float> v(kRows * kCols);
    for (auto& x : v) x = d(rng);
    return v;
  }();
  return w;
}

const char* kFormats[] = {"F16",  "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                          "Q6_K", "int8_sym_g32", "int4_sym_g128", "int4_asym_g128", "int3_asym_g64", "int8_asym_row"};

const std::vector<float>& importance() {
  static const std::vector<float> w = [] {
    std::mt19937 rng(2);
    std::lognormal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(kCols);
    for (auto& x : v) x = d(rng);
    return v;
  }();
  return w;
}

void BM_Quantize(benchmark::State& state) {
  const auto f = qz::find_format(kFormats[state.range(0)], kCols);
  const auto threads = static_cast<unsigned>(state.range(1) == 0 ? qz::hardware_threads() : state.range(1));
  const bool weighted = state.range(2) != 0;
  const float* imp = weighted ? importance().data() : nullptr;
  state.SetLabel(f->name() + (weighted ? " imatrix" : "") + (state.range(1) == 0 ? " all threads" : " 1 thread"));
  const auto& w = weights();
  std::vector<uint8_t> out(kRows * f->row_bytes(kCols));
  constexpr size_t kRowsPerTask = 16;
  for (auto _ : state) {
    qz::parallel_for(kRows / kRowsPerTask, threads, [&](size_t task, unsigned) {
      const size_t r0 = task * kRowsPerTask;
      qz::rtn_quantize_rows(*f, w.data() + r0 * kCols, kRowsPerTask, kCols, imp, nullptr,
                            out.data() + r0 * f->row_bytes(kCols));
    });
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRows * kCols * sizeof(float)));
}

void BM_Dequantize(benchmark::State& state) {
  const auto f = qz::find_format(kFormats[state.range(0)], kCols);
  state.SetLabel(f->name() + " 1 thread");
  const auto& w = weights();
  std::vector<uint8_t> q(kRows * f->row_bytes(kCols));
  qz::rtn_quantize_rows(*f, w.data(), kRows, kCols, nullptr, nullptr, q.data());
  std::vector<float> y(kRows * kCols);
  for (auto _ : state) {
    for (size_t r = 0; r < kRows; ++r) f->dequantize_row(q.data() + r * f->row_bytes(kCols), y.data() + r * kCols, kCols);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRows * kCols * sizeof(float)));
}

void FormatArgs(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < static_cast<int>(std::size(kFormats)); ++i)
    for (int weighted : {0, 1})
      for (int t : {1, 0})
        if (weighted == 0 || (i >= 2 && i <= 10)) b->Args({i, t, weighted});  // imatrix: llama.cpp types
}

}  // namespace

BENCHMARK(BM_Quantize)->Apply(FormatArgs)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Dequantize)->DenseRange(0, static_cast<int>(std::size(kFormats)) - 1)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
