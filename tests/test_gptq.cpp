// GPTQ against independent truths: identity Hessian = round-to-nearest, a brute-force optimal-brain-quantization
// on tiny layers, lower output error than RTN on correlated inputs, the loss identity, and damping recovery.
#include "qz/methods/gptq.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qz/core/random.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/methods/hessian.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

std::vector<float> dequantize(const Format& f, const std::vector<uint8_t>& q, size_t rows, size_t cols) {
  std::vector<float> y(rows * cols);
  for (size_t r = 0; r < rows; ++r) f.dequantize_row(q.data() + r * f.row_bytes(cols), y.data() + r * cols, cols);
  return y;
}

std::vector<uint8_t> rtn(const Format& f, const std::vector<float>& w, size_t rows, size_t cols) {
  std::vector<uint8_t> q(rows * f.row_bytes(cols));
  for (size_t r = 0; r < rows; ++r) f.quantize_row(w.data() + r * cols, q.data() + r * f.row_bytes(cols), cols, nullptr);
  return q;
}

std::vector<uint8_t> gptq(const Format& f, const std::vector<float>& w, size_t rows, size_t cols,
                          const Eigen::MatrixXd& H, GptqConfig cfg = {}, unsigned threads = 2, GptqStats* stats = nullptr) {
  std::vector<uint8_t> q(rows * f.row_bytes(cols));
  const GptqStats s = gptq_quantize(f, w.data(), rows, cols, H, cfg, threads, q.data());
  if (stats) *stats = s;
  return q;
}

// The reference algorithm alone (no refinement: tests/test_gptq_refine.cpp tests that), which the reference
// definitions below describe.
GptqConfig reference() {
  GptqConfig c;
  c.refine_rounds = 0;
  return c;
}

const char* kFormats[] = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                          "int4_sym_g32", "int4_asym_g64", "int3_asym_row", "int8_sym_g128", "int2_asym_g32"};

TEST(Gptq, IdentityHessianEqualsRoundToNearestForEveryFormat) {
  const size_t rows = 40, cols = 512;
  std::vector<float> w = test::gaussian(rows * cols, 3, 0.05f);
  for (size_t i = 0; i < w.size(); i += 97) w[i] *= 6;
  const Eigen::MatrixXd I = Eigen::MatrixXd::Identity(cols, cols);
  for (const char* name : kFormats) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, cols);
    EXPECT_EQ(gptq(*f, w, rows, cols, I, reference()), rtn(*f, w, rows, cols));
    GptqConfig ordered = reference();
    ordered.act_order = true;  // all diagonal entries equal: the order stays, static groups equal RTN too
    EXPECT_EQ(gptq(*f, w, rows, cols, I, ordered), rtn(*f, w, rows, cols));
  }
}

// With a diagonal Hessian no error is fed forward, so GPTQ with the weighted grid fit is block-by-block rounding on
// grids from the format's importance-weighted search with diag(H) as the importance. (Not quantize_row with an
// imatrix: llama.cpp's weighted quantizers mix in the whole row's mean square, which a block's fit does not see.)
TEST(Gptq, DiagonalHessianWithWeightedFitEqualsRoundingOnImportanceWeightedGrids) {
  const size_t rows = 24, cols = 512;
  std::vector<float> w = test::gaussian(rows * cols, 5, 0.05f);
  for (size_t i = 0; i < w.size(); i += 89) w[i] *= 5;
  const std::vector<float> imp = test::gaussian(cols, 6, 1.0f);
  Eigen::MatrixXd H = Eigen::MatrixXd::Zero(cols, cols);
  std::vector<float> importance(cols);
  for (size_t c = 0; c < cols; ++c) H(c, c) = importance[c] = 0.1f + imp[c] * imp[c];
  GptqConfig weighted = reference();
  weighted.weighted_fit = true;
  for (const char* name : kFormats) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, cols);
    std::vector<uint8_t> want(rows * f->row_bytes(cols));
    const size_t gs = f->block_size();
    std::vector<int32_t> codes(gs);
    for (size_t r = 0; r < rows; ++r)
      for (size_t b = 0; b < cols / gs; ++b) {
        const float* x = w.data() + r * cols + b * gs;
        BlockGrid g;
        f->fit(x, gs, importance.data() + b * gs, g);
        for (size_t j = 0; j < gs; ++j) codes[j] = f->quantize_value(g, j, x[j]);
        f->encode(g, codes.data(), want.data() + r * f->row_bytes(cols) + b * f->block_bytes());
      }
    const auto got = gptq(*f, w, rows, cols, H, weighted);
    EXPECT_EQ(got, want);
    if (name[0] == 'Q' && std::string(name) != "Q8_0")  // llama.cpp's weighted searches (Q8_0 and int grids have none)
      EXPECT_NE(got, gptq(*f, w, rows, cols, H, reference())) << "the weights changed no grid";
  }
}

// Optimal brain quantization by brute force, in double: quantize column i on its grid (fitted when the group
// starts, on the current weights), then re-solve every later column by least squares with the columns so far fixed:
// minimize (w - w0)^T H (w - w0) over the free columns.
std::vector<float> brute_force_obq(const Format& f, const std::vector<float>& w0, size_t rows, size_t cols,
                                   const Eigen::MatrixXd& Hd) {
  const size_t gs = f.block_size();
  std::vector<float> out(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    Eigen::VectorXd orig(cols), cur(cols);
    for (size_t c = 0; c < cols; ++c) orig[c] = cur[c] = w0[r * cols + c];
    BlockGrid grid;
    for (size_t i = 0; i < cols; ++i) {
      if (i % gs == 0) {
        std::vector<float> block(gs);
        for (size_t j = 0; j < gs; ++j) block[j] = static_cast<float>(cur[i + j]);
        f.fit(block.data(), gs, nullptr, grid);
      }
      const float q = f.dequantize_value(grid, i % gs, f.quantize_value(grid, i % gs, static_cast<float>(cur[i])));
      cur[i] = q;
      out[r * cols + i] = q;
      const auto nf = static_cast<Eigen::Index>(cols - i - 1), nq = static_cast<Eigen::Index>(i + 1);
      if (nf == 0) break;
      const Eigen::VectorXd dq = cur.head(nq) - orig.head(nq);
      const Eigen::VectorXd df = -Hd.bottomRightCorner(nf, nf).ldlt().solve(Hd.bottomLeftCorner(nf, nq) * dq);
      cur.tail(nf) = orig.tail(nf) + df;
    }
  }
  return out;
}

TEST(Gptq, EqualsBruteForceOptimalBrainQuantizationOnTinyLayers) {
  size_t differs_from_rtn = 0;
  for (uint64_t seed : {1u, 2u, 3u, 4u, 5u}) {
    for (const char* name : {"int3_asym_row", "int4_sym_g4", "int2_asym_g4"}) {
      SCOPED_TRACE(std::string(name) + " seed " + std::to_string(seed));
      const size_t rows = 4, cols = 8, tokens = 64;
      const auto f = find_format(name, cols);
      XorShift64 rng(seed);
      Eigen::MatrixXd X(tokens, cols);
      for (Eigen::Index t = 0; t < X.rows(); ++t) {
        const double common = rng.gauss();
        for (Eigen::Index c = 0; c < X.cols(); ++c) X(t, c) = 0.8 * common + 0.6 * rng.gauss() * (c == 2 ? 4.0 : 1.0);
      }
      const Eigen::MatrixXd H = 2.0 / tokens * X.transpose() * X;
      std::vector<float> w(rows * cols);
      for (auto& v : w) v = static_cast<float>(rng.gauss());
      GptqConfig cfg = reference();
      cfg.block_size = 3;  // lazy batches that do not align with anything: the result must not change
      const auto q = dequantize(*f, gptq(*f, w, rows, cols, H, cfg), rows, cols);
      Eigen::MatrixXd Hd = H;
      Hd.diagonal().array() += cfg.damp * H.diagonal().mean();
      const auto expected = brute_force_obq(*f, w, rows, cols, Hd);
      for (size_t i = 0; i < q.size(); ++i) EXPECT_NEAR(q[i], expected[i], 1e-5) << "element " << i;
      if (dequantize(*f, rtn(*f, w, rows, cols), rows, cols) != q) ++differs_from_rtn;
    }
  }
  EXPECT_GE(differs_from_rtn, 10u);  // the error feedback did change the result
}

struct Layer {
  size_t rows, cols, tokens;
  Eigen::MatrixXf X;  // tokens x cols
  std::vector<float> w;
  Eigen::MatrixXd H;
};

// Inputs with correlated channels and a few outlier channels; weights Gaussian.
Layer correlated_layer(size_t rows, size_t cols, size_t tokens, uint64_t seed) {
  Layer l{rows, cols, tokens, Eigen::MatrixXf(tokens, cols), {}, {}};
  XorShift64 rng(seed);
  const size_t factors = 8;
  Eigen::MatrixXd mix(factors, cols);
  for (Eigen::Index i = 0; i < mix.size(); ++i) mix(i) = rng.gauss();
  for (size_t t = 0; t < tokens; ++t) {
    Eigen::VectorXd c(factors);
    for (auto& v : c) v = rng.gauss();
    for (size_t j = 0; j < cols; ++j)
      l.X(t, j) = static_cast<float>((mix.col(j).dot(c) / 3 + 0.3 * rng.gauss()) * (j % 37 == 5 ? 15.0 : 1.0));
  }
  l.w.resize(rows * cols);
  for (auto& v : l.w) v = static_cast<float>(0.02 * rng.gauss());
  const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Xr = l.X;  // tokens as rows
  HessianAccumulator acc(cols);
  acc.add_rows(Xr.data(), tokens, 2);
  l.H = acc.hessian();
  return l;
}

double output_error(const Layer& l, const std::vector<float>& q) {
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> W(l.w.data(), l.rows, l.cols);
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> Q(q.data(), l.rows, l.cols);
  const Eigen::MatrixXd D = (W - Q).cast<double>();
  return (l.X.cast<double>() * D.transpose()).squaredNorm();
}

TEST(Gptq, BeatsRoundToNearestOnCorrelatedInputsAndReportsItsLoss) {
  const Layer l = correlated_layer(64, 512, 1024, 9);
  for (const char* name : kFormats) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    GptqStats stats;
    const auto qg = dequantize(*f, gptq(*f, l.w, l.rows, l.cols, l.H, reference(), 2, &stats), l.rows, l.cols);
    const auto qr = dequantize(*f, rtn(*f, l.w, l.rows, l.cols), l.rows, l.cols);
    const double eg = output_error(l, qg), er = output_error(l, qr);
    EXPECT_LT(eg, er) << "GPTQ " << eg << " vs RTN " << er;
    // With the refinement (the default), lower still.
    const auto qf = dequantize(*f, gptq(*f, l.w, l.rows, l.cols, l.H), l.rows, l.cols);
    EXPECT_LE(output_error(l, qf), eg * (1 + 1e-9));
    // The loss identity: sum (w - q)^2 / U_ii^2 / 2 = 1/2 sum_rows (w - q)^T (H + lambda I) (w - q).
    Eigen::MatrixXd Hd = l.H;
    Hd.diagonal().array() += stats.damp * l.H.diagonal().mean();
    double direct = 0;
    for (size_t r = 0; r < l.rows; ++r) {
      Eigen::VectorXd e(l.cols);
      for (size_t c = 0; c < l.cols; ++c) e[c] = static_cast<double>(l.w[r * l.cols + c]) - qg[r * l.cols + c];
      direct += 0.5 * e.dot(Hd * e);
    }
    EXPECT_NEAR(stats.loss, direct, 2e-3 * direct);
  }
}

TEST(Gptq, ActOrderAndStaticGroupsAlsoBeatRoundToNearest) {
  const Layer l = correlated_layer(32, 256, 512, 11);
  GptqConfig act, fixed;
  act.act_order = true;
  fixed.static_groups = true;
  for (const char* name : {"Q4_K", "Q4_0", "int4_asym_g64"}) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    const auto qr = dequantize(*f, rtn(*f, l.w, l.rows, l.cols), l.rows, l.cols);
    for (const GptqConfig& cfg : {act, fixed}) {
      const auto qg = dequantize(*f, gptq(*f, l.w, l.rows, l.cols, l.H, cfg), l.rows, l.cols);
      EXPECT_LT(output_error(l, qg), output_error(l, qr));
    }
  }
}

TEST(Gptq, SameBytesForAnyThreadCount) {
  const Layer l = correlated_layer(100, 256, 300, 5);
  const auto f = find_format("Q4_K", l.cols);
  const auto one = gptq(*f, l.w, l.rows, l.cols, l.H, {}, 1);
  EXPECT_EQ(gptq(*f, l.w, l.rows, l.cols, l.H, {}, 2), one);
  EXPECT_EQ(gptq(*f, l.w, l.rows, l.cols, l.H, {}, 5), one);
}

TEST(Gptq, IndefiniteOrSingularHessianRecoversWithMoreDamping) {
  const size_t rows = 4, cols = 32;
  const std::vector<float> w = test::gaussian(rows * cols, 8, 0.1f);
  const auto f = find_format("Q4_0", cols);
  Eigen::MatrixXd H = Eigen::MatrixXd::Identity(cols, cols);
  H(3, 3) = -0.5;  // indefinite
  GptqStats stats;
  gptq(*f, w, rows, cols, H, {}, 1, &stats);
  EXPECT_GT(stats.damp, 0.01);
  EXPECT_GT(stats.damp_attempts, 1);
  // Rank one: singular, and with no damping asked for.
  Eigen::VectorXd v = Eigen::VectorXd::Ones(cols);
  GptqConfig none;
  none.damp = 0.0;
  gptq(*f, w, rows, cols, v * v.transpose(), none, 1, &stats);
  EXPECT_GT(stats.damp, 0.0);
  Eigen::MatrixXd bad = Eigen::MatrixXd::Identity(cols, cols);
  bad(0, 1) = std::nan("");
  EXPECT_THROW(gptq(*f, w, rows, cols, bad), std::invalid_argument);
}

TEST(Gptq, DeadColumnsAreZeroed) {
  const Layer l = correlated_layer(8, 64, 128, 4);
  Eigen::MatrixXd H = l.H;
  H.row(10).setZero();
  H.col(10).setZero();
  for (const char* name : {"int4_asym_g32", "int3_asym_g32"}) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    GptqStats stats;
    const auto q = dequantize(*f, gptq(*f, l.w, l.rows, l.cols, H, reference(), 1, &stats), l.rows, l.cols);
    EXPECT_EQ(stats.dead_columns, 1u);
    // A zeroed weight rounds to the grid's zero: exact in the own layout, off by the fp16 rounding of the min
    // (at most |m| * 2^-11, |m| < max |w| here) where the grid is stored as Q4_1.
    float wmax = 0;
    for (float v : l.w) wmax = std::max(wmax, std::fabs(v));
    for (size_t r = 0; r < l.rows; ++r) {
      if (f->llama_native()) EXPECT_LE(std::fabs(q[r * l.cols + 10]), wmax * 0x1p-11);
      else EXPECT_EQ(q[r * l.cols + 10], 0.0f);
    }
  }
}

TEST(Hessian, EqualsTwoOverNSumOfOuterProducts) {
  const size_t tokens = 700, cols = 70;  // several chunks and partial panels
  std::vector<float> x = test::gaussian(tokens * cols, 12, 1.0f);
  HessianAccumulator a(cols), b(cols);
  a.add_rows(x.data(), tokens, 1);
  b.add_rows(x.data(), 300, 3);
  b.add_rows(x.data() + 300 * cols, tokens - 300, 2);
  Eigen::MatrixXd direct = Eigen::MatrixXd::Zero(cols, cols);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < cols; ++i)
      for (size_t j = 0; j < cols; ++j) direct(i, j) += static_cast<double>(x[t * cols + i]) * x[t * cols + j];
  direct *= 2.0 / tokens;
  EXPECT_LT((a.hessian() - direct).cwiseAbs().maxCoeff(), 1e-4);
  EXPECT_LT((b.hessian() - direct).cwiseAbs().maxCoeff(), 1e-4);
  HessianAccumulator c(cols);
  c.add_hessian(a.hessian(), tokens);
  c.add_rows(x.data(), tokens, 2);
  EXPECT_LT((c.hessian() - direct).cwiseAbs().maxCoeff(), 1e-4);  // same data twice: same average
  EXPECT_EQ(c.tokens(), 2 * tokens);
  const Eigen::MatrixXd made = c.hessian();
  EXPECT_EQ(c.take_hessian(), made);  // in place, the same values
  EXPECT_EQ(c.tokens(), 0u);
}

// take_hessian scales and mirrors in place by 64 x 64 tiles over threads: for a width of several tiles and a ragged
// last one, the same values as hessian() for any thread count; an accumulator with nothing added gives zeros, and one
// emptied by take_hessian starts again from nothing.
TEST(Hessian, TakenInPlaceOverThreadsEqualsTheCopyForAnyThreadCount) {
  const size_t tokens = 300, cols = 150;
  const std::vector<float> x = test::gaussian(tokens * cols, 13, 1.0f);
  for (unsigned threads : {1u, 3u}) {
    HessianAccumulator a(cols);
    EXPECT_EQ(a.take_hessian(threads), Eigen::MatrixXd::Zero(cols, cols));
    a.add_rows(x.data(), tokens, 2);
    const Eigen::MatrixXd made = a.hessian();
    EXPECT_EQ(a.take_hessian(threads), made) << threads;
    a.add_rows(x.data(), 100, 2);  // again, from nothing
    HessianAccumulator fresh(cols);
    fresh.add_rows(x.data(), 100, 2);
    EXPECT_EQ(a.take_hessian(threads), fresh.hessian()) << threads;
  }
}

}  // namespace
}  // namespace qz
