// GPTQ on one 4096 x 4096 layer at 4 bits (int4 groups of 128, and Q4_K), with a given Hessian: seconds per layer
// and GFLOP/s of the update products, beside a plain Eigen GEMM of the same size on the same machine.
//   ./build/bench/bench_gptq
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <Eigen/Dense>
#include <random>
#include <vector>

#include "qz/core/blas.hpp"
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

// The factorization GPTQ runs (core/blas.hpp: blocked over our threads, each BLAS call single-threaded, the same
// bits for any thread count) beside LAPACK's own dpotrf / strtri on OpenBLAS's threads, on the bench's Hessian.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void strtri_(const char* uplo, const char* diag, const int* n, float* a, const int* lda, int* info);
}
const double kCholFlops = static_cast<double>(kN) * kN * kN / 3.0;

void BM_Cholesky(benchmark::State& state) {
  const bool ours = state.range(0) == 0;
  const auto& H = hessian();
  std::vector<double> a(kN * kN);
  const int n = static_cast<int>(kN);
  for (auto _ : state) {
    state.PauseTiming();
    std::copy(H.data(), H.data() + kN * kN, a.data());
    state.ResumeTiming();
    int info = 0;
    if (ours) {
      info = qz::parallel_dpotrf_upper(n, a.data(), n, qz::hardware_threads());
    } else {
      openblas_set_num_threads(static_cast<int>(qz::hardware_threads()));
      const char u = 'U';
      dpotrf_(&u, &n, a.data(), &n, &info);
      openblas_set_num_threads(1);
    }
    if (info != 0) state.SkipWithError("not positive definite");
  }
  state.counters["GFLOPs"] = benchmark::Counter(kCholFlops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(ours ? "dpotrf, ours (blocked over our threads)" : "dpotrf, LAPACK on OpenBLAS's threads");
}

void BM_TriangularInverse(benchmark::State& state) {
  const bool ours = state.range(0) == 0;
  const auto& H = hessian();
  std::vector<double> a(H.data(), H.data() + kN * kN);
  const int n = static_cast<int>(kN);
  int info = 0;
  const char u = 'U', nd = 'N';
  dpotrf_(&u, &n, a.data(), &n, &info);
  std::vector<float> v(kN * kN, 0.0f), x(kN * kN);
  for (size_t j = 0; j < kN; ++j)
    for (size_t i = 0; i <= j; ++i) v[i + j * kN] = static_cast<float>(a[i + j * kN]);
  for (auto _ : state) {
    if (ours) {
      qz::parallel_strtri_upper(n, v.data(), n, x.data(), n, qz::hardware_threads());
    } else {
      state.PauseTiming();
      x = v;
      state.ResumeTiming();
      openblas_set_num_threads(static_cast<int>(qz::hardware_threads()));
      strtri_(&u, &nd, &n, x.data(), &n, &info);
      openblas_set_num_threads(1);
    }
    benchmark::DoNotOptimize(x.data());
  }
  state.counters["GFLOPs"] = benchmark::Counter(kCholFlops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(ours ? "strtri, ours (blocked over our threads)" : "strtri, LAPACK on OpenBLAS's threads");
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
BENCHMARK(BM_Cholesky)->Arg(0)->Arg(1)->Iterations(3)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_TriangularInverse)->Arg(0)->Arg(1)->Iterations(3)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_EigenGemm)->Iterations(2)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK_MAIN();
