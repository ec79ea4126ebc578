// GPTQ's refinement (methods/gptq_refine.hpp) against properties that must hold: it never raises any row's
// objective (w - q)^T H (w - q) and lowers the layer's for every format; its codes end locally optimal (no single
// storable step lowers the objective, checked by brute force); its block scales and mins are at least as good as
// the exact least-squares fit of its final codes (solved densely here, rounded to fp16 as the blocks store it);
// with an identity Hessian it is never worse than round-to-nearest. Objectives are computed here from the encoded
// bytes (dequantize_row), in double.
#include "qz/methods/gptq_refine.hpp"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>

#include "qz/core/half.hpp"
#include "qz/core/random.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/methods/gptq.hpp"
#include "qz/methods/hessian.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

const char* kFormats[] = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                          "int4_sym_g32", "int4_asym_g64", "int3_asym_row", "int8_sym_g128", "int2_asym_g32"};

// Correlated inputs with a few outlier channels, Gaussian weights; H = 2/N X^T X.
struct Layer {
  size_t rows, cols;
  std::vector<float> w;
  Eigen::MatrixXd H;
};
Layer correlated_layer(size_t rows, size_t cols, size_t tokens, uint64_t seed) {
  Layer l{rows, cols, {}, {}};
  XorShift64 rng(seed);
  Eigen::MatrixXd mix(6, cols);
  for (Eigen::Index i = 0; i < mix.size(); ++i) mix(i) = rng.gauss();
  std::vector<float> x(tokens * cols);
  for (size_t t = 0; t < tokens; ++t) {
    Eigen::VectorXd c(6);
    for (auto& v : c) v = rng.gauss();
    for (size_t j = 0; j < cols; ++j)
      x[t * cols + j] = static_cast<float>((mix.col(j).dot(c) / 3 + 0.3 * rng.gauss()) * (j % 29 == 3 ? 10.0 : 1.0));
  }
  HessianAccumulator acc(cols);
  acc.add_rows(x.data(), tokens, 2);
  l.H = acc.hessian();
  l.w.resize(rows * cols);
  for (auto& v : l.w) v = static_cast<float>(0.02 * rng.gauss());
  return l;
}

std::vector<float> to_float(const Eigen::MatrixXd& H) {
  std::vector<float> h(static_cast<size_t>(H.size()));
  for (Eigen::Index i = 0; i < H.rows(); ++i)
    for (Eigen::Index j = 0; j < H.cols(); ++j) h[static_cast<size_t>(i * H.cols() + j)] = static_cast<float>(H(i, j));
  return h;
}

// Per-row objectives of encoded rows.
std::vector<double> row_objectives(const Format& f, const std::vector<uint8_t>& bytes, const Layer& l) {
  std::vector<double> out(l.rows);
  std::vector<float> q(l.cols);
  for (size_t r = 0; r < l.rows; ++r) {
    f.dequantize_row(bytes.data() + r * f.row_bytes(l.cols), q.data(), l.cols);
    Eigen::VectorXd e(l.cols);
    for (size_t c = 0; c < l.cols; ++c) e[c] = static_cast<double>(l.w[r * l.cols + c]) - q[c];
    out[r] = e.dot(l.H * e);
  }
  return out;
}

// Round-to-nearest grids and codes of every block (the refinement's start in the direct tests).
struct Rounded {
  std::vector<BlockGrid> grids;
  std::vector<int32_t> codes;
};
Rounded round_to_nearest(const Format& f, const Layer& l) {
  const size_t gs = f.block_size(), groups = l.cols / gs;
  Rounded r{std::vector<BlockGrid>(l.rows * groups), std::vector<int32_t>(l.rows * l.cols)};
  for (size_t row = 0; row < l.rows; ++row)
    for (size_t b = 0; b < groups; ++b) {
      const float* x = l.w.data() + row * l.cols + b * gs;
      f.fit(x, gs, nullptr, r.grids[row * groups + b]);
      for (size_t j = 0; j < gs; ++j) r.codes[row * l.cols + b * gs + j] = f.quantize_value(r.grids[row * groups + b], j, x[j]);
    }
  return r;
}
std::vector<uint8_t> encode(const Format& f, const Layer& l, const Rounded& r) {
  const size_t gs = f.block_size(), groups = l.cols / gs;
  std::vector<uint8_t> bytes(l.rows * f.row_bytes(l.cols));
  for (size_t row = 0; row < l.rows; ++row)
    for (size_t b = 0; b < groups; ++b)
      f.encode(r.grids[row * groups + b], r.codes.data() + row * l.cols + b * gs,
               bytes.data() + row * f.row_bytes(l.cols) + b * f.block_bytes());
  return bytes;
}

// GPTQ with and without the refinement on layer l: no row's objective rises, the layer's falls to below
// `at_most` of what it was, and the reported gain is that drop.
void expect_refinement_lowers(const Format& f, const Layer& l, GptqConfig refined, double at_most) {
  GptqConfig plain = refined;
  plain.refine_rounds = 0;
  std::vector<uint8_t> a(l.rows * f.row_bytes(l.cols)), b(a.size());
  gptq_quantize(f, l.w.data(), l.rows, l.cols, l.H, plain, 2, a.data());
  const GptqStats s = gptq_quantize(f, l.w.data(), l.rows, l.cols, l.H, refined, 2, b.data());
  const auto before = row_objectives(f, a, l), after = row_objectives(f, b, l);
  double sb = 0, sa = 0;
  for (size_t r = 0; r < l.rows; ++r) {
    EXPECT_LE(after[r], before[r] * (1 + 1e-6)) << "row " << r;
    sb += before[r];
    sa += after[r];
  }
  EXPECT_LT(sa, sb * at_most) << "the refinement changed nothing";
  EXPECT_NEAR(s.refine_gain, sb - sa, 2e-3 * (sb - sa) + 1e-12 * sb);
}

TEST(GptqRefine, NeverRaisesARowsObjectiveAndLowersTheLayersForEveryFormat) {
  const Layer l = correlated_layer(24, 256, 600, 21);
  for (const char* name : kFormats) {
    SCOPED_TRACE(name);
    expect_refinement_lowers(*find_format(name, l.cols), l, GptqConfig{}, 0.995);
  }
}

// GPTQ hands the refinement E (H + lambda I) from its own errors and factor (a triangular product, not E H): with
// act-order's permuted columns and a dead column (zero inputs) too, the gain it reports is the drop of the
// objectives measured here, and no row gets worse.
TEST(GptqRefine, TheProductFromGptqsFactorHoldsWithActOrderAndDeadColumns) {
  Layer l = correlated_layer(20, 256, 600, 33);
  for (Eigen::Index j = 0; j < l.H.rows(); ++j) l.H(j, 70) = l.H(70, j) = 0.0;  // column 70's inputs are all zero
  for (const char* name : {"Q4_K", "int4_asym_g64", "Q8_0"}) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    GptqConfig refined;
    refined.act_order = true;
    std::vector<uint8_t> q(l.rows * f->row_bytes(l.cols));
    ASSERT_EQ(gptq_quantize(*f, l.w.data(), l.rows, l.cols, l.H, refined, 2, q.data()).dead_columns, 1u);
    expect_refinement_lowers(*f, l, refined, 0.999);
  }
}

TEST(GptqRefine, CodesEndLocallyOptimalByBruteForce) {
  const Layer l = correlated_layer(6, 64, 300, 22);
  for (const char* name : {"int4_sym_g32", "int3_asym_row", "Q8_0", "int2_asym_g32"}) {  // codes only (no linear refit)
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    ASSERT_EQ(f->linear_params(), 0u);
    Rounded r = round_to_nearest(*f, l);
    const std::vector<float> Hf = to_float(l.H);
    const std::vector<bool> dead(l.cols, false);
    gptq_refine_rows(*f, l.w.data(), l.rows, l.cols, Hf.data(), dead, 25, r.grids.data(), r.codes.data());
    const auto base = row_objectives(*f, encode(*f, l, r), l);
    size_t tried = 0;
    const size_t gs = f->block_size(), groups = l.cols / gs;
    for (size_t row = 0; row < l.rows; ++row)
      for (size_t c = 0; c < l.cols; ++c)
        for (int step : {1, -1}) {
          Rounded m = r;
          int32_t& code = m.codes[row * l.cols + c];
          const BlockGrid& g = m.grids[row * groups + c / gs];
          const float v = f->dequantize_value(g, c % gs, code + step);
          if (f->quantize_value(g, c % gs, v) != code + step) continue;  // not storable
          code += step;
          ++tried;
          EXPECT_GE(row_objectives(*f, encode(*f, l, m), l)[row], base[row] * (1 - 1e-5)) << "row " << row << " col " << c;
        }
    EXPECT_GT(tried, l.rows * l.cols / 2);
  }
}

// Q4_0 / Q5_0: value = d (code - 2^(bits-1)); Q4_1 / Q5_1: value = d code + m (the block layouts of formats/).
TEST(GptqRefine, ScalesAndMinsAreAtLeastTheLeastSquaresFitOfTheirCodes) {
  const Layer l = correlated_layer(8, 128, 400, 23);
  for (const char* name : {"Q4_0", "Q5_0", "Q4_1", "Q5_1"}) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    const bool with_min = std::string(name).back() == '1';
    const int half = std::string(name)[1] == '4' ? 8 : 16;
    Rounded r = round_to_nearest(*f, l);
    const auto start = row_objectives(*f, encode(*f, l, r), l);
    const std::vector<float> Hf = to_float(l.H);
    gptq_refine_rows(*f, l.w.data(), l.rows, l.cols, Hf.data(), std::vector<bool>(l.cols, false), 1, r.grids.data(),
                     r.codes.data());
    const auto refined = row_objectives(*f, encode(*f, l, r), l);
    const size_t groups = l.cols / 32, k = with_min ? 2 : 1;
    for (size_t row = 0; row < l.rows; ++row) {
      EXPECT_LT(refined[row], start[row]);
      // The dense least-squares fit of these codes: minimize (w - B p)^T H (w - B p).
      Eigen::MatrixXd B = Eigen::MatrixXd::Zero(l.cols, groups * k);
      Eigen::VectorXd w(l.cols);
      for (size_t c = 0; c < l.cols; ++c) {
        const int32_t code = r.codes[row * l.cols + c];
        B(c, (c / 32) * k) = with_min ? code : code - half;
        if (with_min) B(c, (c / 32) * k + 1) = 1.0;
        w[c] = l.w[row * l.cols + c];
      }
      const Eigen::MatrixXd A = B.transpose() * l.H * B;
      const Eigen::VectorXd p = A.ldlt().solve(B.transpose() * l.H * w);
      const Eigen::VectorXd e = w - B * p;
      const double optimum = e.dot(l.H * e);
      // The stored parameters are fp16: each lies within one fp16 spacing u_i of the continuous optimum p (the
      // refit rounds its own, float-computed solution to nearest), so the objective exceeds the optimum by at
      // most u^T |A| u. A refit that was not kept leaves parameters better still.
      Eigen::VectorXd u(p.size());
      for (Eigen::Index i = 0; i < p.size(); ++i) {
        int ex = 0;
        std::frexp(std::abs(p[i]), &ex);  // |p| = m 2^ex, m in [0.5, 1): fp16 spacing 2^(ex-11), 2^-24 below normals
        u[i] = std::ldexp(1.0, std::max(ex - 11, -24));
      }
      EXPECT_GE(refined[row], optimum * (1 - 1e-6)) << "row " << row;  // the codes' continuous fit bounds from below
      EXPECT_LE(refined[row], optimum + u.dot(A.cwiseAbs() * u)) << "row " << row;
    }
  }
}

TEST(GptqRefine, IdentityHessianIsNeverWorseThanRoundToNearest) {
  Layer l = correlated_layer(16, 256, 10, 24);
  l.H = Eigen::MatrixXd::Identity(l.cols, l.cols);
  for (const char* name : kFormats) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    std::vector<uint8_t> rtn(l.rows * f->row_bytes(l.cols)), refined(rtn.size());
    for (size_t r = 0; r < l.rows; ++r)
      f->quantize_row(l.w.data() + r * l.cols, rtn.data() + r * f->row_bytes(l.cols), l.cols, nullptr);
    gptq_quantize(*f, l.w.data(), l.rows, l.cols, l.H, GptqConfig{}, 2, refined.data());
    const auto a = row_objectives(*f, rtn, l), b = row_objectives(*f, refined, l);
    for (size_t r = 0; r < l.rows; ++r) EXPECT_LE(b[r], a[r] * (1 + 1e-6)) << "row " << r;
  }
}

}  // namespace
}  // namespace qz
