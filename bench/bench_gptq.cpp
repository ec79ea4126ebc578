// GPTQ on one 4096 x 4096 layer at 4 bits (int4 groups of 128, and Q4_K), with a given Hessian: seconds per layer
// and GFLOP/s of the update products, beside a plain Eigen GEMM of the same size on the same machine.
//   ./build/bench/bench_gptq
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <Eigen/Dense>
#include <random>
#include <vector>

#include "qz/core/parallel.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/methods/gptq.hpp"
#include "qz/methods/hessian.hpp"

namespace {

constexpr size_t kN = 4096;

const Eigen::MatrixXd& hessian() {
  static const Eigen::MatrixXd H = [] {
    std::mt19937 rng(3);
    std::normal_distribution<float> d(0.0f, 1.0f);
    Eigen::MatrixXf B(kN, 256);
    for (Eigen::Index i = 0; i < B.size(); ++i) B(i) = d(rng);
    Eigen::MatrixXf h = B * B.transpose() / 256.0f;
    h.diagonal().array() += 0.1f;
    return Eigen::MatrixXd(h.cast<double>());
  }();
  return H;
}

std::vector<float> gaussian(size_t n, uint32_t seed, float std) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

const std::vector<float>& weights() {
  static const std::vector<float> w = gaussian(kN * kN, 4, 0.02f);
  return w;
}

// Multiply-adds of the lazy-batch products and the in-block rank-1 updates, times 2.
double update_flops(size_t rows, size_t cols, size_t block) {
  double f = 0;
  for (size_t i1 = 0; i1 < cols; i1 += block) {
    const double count = static_cast<double>(std::min(block, cols - i1));
    f += 2.0 * rows * count * static_cast<double>(cols - i1 - static_cast<size_t>(count));  // block product
    f += rows * count * count;                                                               // rank-1 updates
  }
  return f;
}

void BM_GptqLayer(benchmark::State& state) {
  const char* name = state.range(0) == 0 ? "int4_asym_g128" : "Q4_K";
  const auto f = qz::find_format(name, kN);
  const auto& H = hessian();
  const auto& w = weights();
  std::vector<uint8_t> out(kN * f->row_bytes(kN));
  qz::GptqConfig cfg;
  const unsigned threads = qz::hardware_threads();
  qz::GptqStats stats;
  for (auto _ : state) {
    stats = qz::gptq_quantize(*f, w.data(), kN, kN, H, cfg, threads, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["factor_s"] = stats.factor_seconds;
  state.counters["update_s"] = stats.update_seconds;
  const size_t block = (cfg.block_size + f->block_size() - 1) / f->block_size() * f->block_size();
  state.counters["update_GFLOP"] = update_flops(kN, kN, block) / 1e9;
  state.counters["update_GFLOPs"] =
      benchmark::Counter(update_flops(kN, kN, block) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(name) + ", " + std::to_string(threads) + " threads");
}

// The Hessian of 4096 tokens of 4096 columns, as the pipeline accumulates it, beside OpenBLAS's own ssyrk of the
// same rank-k update on all cores (the reference rate; ours keeps OpenBLAS single-threaded for fixed results).
const std::vector<float>& activations() {
  static const std::vector<float> x = gaussian(kN * kN, 5, 1.0f);
  return x;
}
const double kSyrkFlops = static_cast<double>(kN) * (kN + 1) * kN;  // n(n+1)/2 entries, 2 flops per token

void BM_HessianAccumulate(benchmark::State& state) {
  const auto& x = activations();
  const unsigned threads = qz::hardware_threads();
  for (auto _ : state) {
    qz::HessianAccumulator acc(kN);
    acc.add_rows(x.data(), kN, threads);
    benchmark::DoNotOptimize(acc.tokens());
  }
  state.counters["GFLOPs"] = benchmark::Counter(kSyrkFlops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("4096 tokens x 4096 columns, " + std::to_string(threads) + " threads");
}

void BM_OpenBlasSsyrk(benchmark::State& state) {
  const auto& x = activations();
  std::vector<float> c(kN * kN);
  openblas_set_num_threads(static_cast<int>(qz::hardware_threads()));
  for (auto _ : state) {
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, kN, kN, 1.0f, x.data(), kN, 0.0f, c.data(), kN);
    benchmark::DoNotOptimize(c.data());
  }
  openblas_set_num_threads(1);
  state.counters["GFLOPs"] = benchmark::Counter(kSyrkFlops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("OpenBLAS's own threads");
}

void BM_EigenGemm(benchmark::State& state) {
  // The same product size as the updates (rows x cols times cols x cols), split over threads by rows as GPTQ is.
  Eigen::MatrixXf A = Eigen::MatrixXf::Random(kN, 128), B = Eigen::MatrixXf::Random(128, kN), C(kN, kN);
  const unsigned threads = qz::hardware_threads();
  const size_t steps = kN / 128;
  for (auto _ : state) {
    C.setZero();
    for (size_t s = 0; s < steps; ++s)  // 32 products of rank 128, as 32 lazy blocks would do
      qz::parallel_for(kN / 512, threads, [&](size_t t, unsigned) {
        C.middleRows(static_cast<Eigen::Index>(t * 512), 512).noalias() -= A.middleRows(static_cast<Eigen::Index>(t * 512), 512) * B;
      });
    benchmark::DoNotOptimize(C.data());
  }
  const double flops = 2.0 * kN * 128.0 * kN * steps;
  state.counters["GFLOPs"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::to_string(threads) + " threads");
}

}  // namespace

BENCHMARK(BM_GptqLayer)->Arg(0)->Arg(1)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_HessianAccumulate)->Iterations(2)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_OpenBlasSsyrk)->Iterations(2)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_EigenGemm)->Iterations(2)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK_MAIN();
