// AWQ's searches on synthetic layers: salient input channels make scaling pay off, uniform activations leave the
// weights alone, clipping never hurts, non-finite losses fall back to s = 1.
#include "qz/methods/awq.hpp"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>

#include "qz/core/random.hpp"
#include "qz/formats/format_table.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Layer {
  size_t rows, cols, tokens;
  std::vector<float> x, w;
};

Layer layer(size_t rows, size_t cols, size_t tokens, double outlier_scale, uint64_t seed) {
  Layer l{rows, cols, tokens, std::vector<float>(tokens * cols), std::vector<float>(rows * cols)};
  XorShift64 rng(seed);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t j = 0; j < cols; ++j) l.x[t * cols + j] = static_cast<float>(rng.gauss() * (j % 50 == 3 ? outlier_scale : 1.0));
  for (auto& v : l.w) v = static_cast<float>(0.02 * rng.gauss());
  return l;
}

// Mean squared output error of quantizing W * diag(s) (then dividing by s), with optional clipping bounds.
double output_error(const Layer& l, const Format& f, const std::vector<float>& s, const std::vector<float>* clip = nullptr,
                    size_t group = 0) {
  MatF W = Eigen::Map<const MatF>(l.w.data(), l.rows, l.cols);
  for (size_t j = 0; j < l.cols; ++j) W.col(j) *= s[j];
  if (clip)
    for (size_t r = 0; r < l.rows; ++r)
      for (size_t g = 0; g < l.cols / group; ++g) {
        const float m = (*clip)[r * (l.cols / group) + g];
        auto seg = W.row(r).segment(g * group, group);
        seg = seg.cwiseMax(-m).cwiseMin(m);
      }
  MatF Q(l.rows, l.cols);
  std::vector<uint8_t> buf(f.row_bytes(l.cols));
  for (size_t r = 0; r < l.rows; ++r) {
    f.quantize_row(W.row(r).data(), buf.data(), l.cols, nullptr);
    f.dequantize_row(buf.data(), Q.row(r).data(), l.cols);
  }
  for (size_t j = 0; j < l.cols; ++j) Q.col(j) /= s[j];
  const Eigen::Map<const MatF> X(l.x.data(), l.tokens, l.cols), W0(l.w.data(), l.rows, l.cols);
  return (X * (Q - W0).transpose()).squaredNorm() / static_cast<double>(l.tokens * l.rows);
}

TEST(Awq, SalientChannelsMakeScalingBeatRoundToNearest) {
  const Layer l = layer(64, 256, 512, 20.0, 1);
  for (const char* name : {"int4_asym_g128", "Q4_0", "Q4_K", "int3_sym_g64"}) {
    SCOPED_TRACE(name);
    const auto f = find_format(name, l.cols);
    for (bool duo : {false, true}) {
      AwqConfig cfg;
      cfg.duo_scaling = duo;
      const AwqScaleResult r = awq_search_scales({{l.w.data(), l.rows, f}}, l.x.data(), l.tokens, l.cols, cfg);
      const double rtn = output_error(l, *f, std::vector<float>(l.cols, 1.0f));
      const double awq = output_error(l, *f, r.scales);
      EXPECT_GT(r.alpha, 0.0);
      EXPECT_LT(awq, 0.9 * rtn) << "AWQ " << awq << " vs RTN " << rtn;
      if (!duo) EXPECT_NEAR(r.loss_unscaled, rtn, 1e-4 * rtn);  // alpha = 0 is RTN (duo scaling still divides by w)
      EXPECT_NEAR(r.loss, awq, 1e-4 * awq);
      // Clipping on the scaled weights can only lower the error (shrink 1 is among the candidates).
      MatF scaled = Eigen::Map<const MatF>(l.w.data(), l.rows, l.cols);
      for (size_t j = 0; j < l.cols; ++j) scaled.col(j) *= r.scales[j];
      std::vector<float> xs(l.x);
      for (size_t t = 0; t < l.tokens; ++t)
        for (size_t j = 0; j < l.cols; ++j) xs[t * l.cols + j] /= r.scales[j];
      const size_t group = f->block_size() > l.cols ? l.cols : f->block_size();
      const auto clip = awq_search_clip({scaled.data(), l.rows, f}, xs.data(), l.tokens, l.cols, group, cfg);
      EXPECT_LE(output_error(l, *f, r.scales, &clip, group), awq * (1 + 1e-6));
    }
  }
}

// The module objective receives Q(W s) / s for every linear: a module that is the linears themselves (their outputs
// on the sample, measured by the test from the weights it is given) makes the same search as the linear objective.
TEST(Awq, ModuleObjectiveSeesTheFakeQuantizedWeightsOfEveryLinear) {
  const Layer a = layer(32, 256, 256, 20.0, 3), b = layer(16, 256, 256, 20.0, 4);
  const auto f = find_format("Q4_0", 256);
  const AwqActivations act = awq_activations(a.x.data(), a.tokens, a.cols, 256);
  const Eigen::Map<const MatF> X(act.sample.data(), static_cast<Eigen::Index>(act.sample_tokens), 256);
  const Layer* ls[] = {&a, &b};
  int calls = 0;
  double worst = 0;
  const AwqModuleLoss module = [&](const std::vector<std::vector<float>>& q) {
    ++calls;
    double err = 0, count = 0;
    for (size_t k = 0; k < 2; ++k) {
      const Layer& l = *ls[k];
      const Eigen::Map<const MatF> Q(q[k].data(), l.rows, 256), W(l.w.data(), l.rows, 256);
      err += (X * (Q - W).transpose()).squaredNorm();
      count += static_cast<double>(l.rows * act.sample_tokens);
      worst = std::max(worst, static_cast<double>((Q - W).cwiseAbs().maxCoeff()));
    }
    return err / count;
  };
  const std::vector<AwqLinear> linears = {{a.w.data(), a.rows, f}, {b.w.data(), b.rows, f}};
  const AwqScaleResult by_linear = awq_search_scales(linears, act, {});
  const AwqScaleResult by_module = awq_search_scales(linears, act, {}, module);
  EXPECT_EQ(calls, 20);  // one per alpha
  EXPECT_EQ(by_module.alpha, by_linear.alpha);
  EXPECT_EQ(by_module.scales, by_linear.scales);
  EXPECT_NEAR(by_module.loss, by_linear.loss, 1e-5 * by_linear.loss);
  EXPECT_GT(worst, 0.0);
  EXPECT_LT(worst, 0.1);  // rounding errors of 0.02-scale weights, not garbage
}

TEST(Awq, UniformActivationsLeaveTheWeightsAlone) {
  // Every channel with the same mean |x|: every alpha gives s = 1 after normalization, so nothing changes.
  Layer l = layer(32, 128, 256, 1.0, 2);
  for (size_t t = 0; t < l.tokens; ++t)
    for (size_t j = 0; j < l.cols; ++j) l.x[t * l.cols + j] = (t + j) % 2 ? 1.0f : -1.0f;
  const auto f = find_format("int4_asym_g128", l.cols);
  const AwqScaleResult r = awq_search_scales({{l.w.data(), l.rows, f}}, l.x.data(), l.tokens, l.cols, {});
  for (float s : r.scales) EXPECT_NEAR(s, 1.0f, 1e-6f);
  EXPECT_EQ(r.alpha, 0.0);
}

TEST(Awq, NonFiniteLossFallsBackToNoScaling) {
  Layer l = layer(16, 64, 32, 1.0, 3);
  l.x[5] = std::numeric_limits<float>::infinity();
  const auto f = find_format("int4_asym_g32", l.cols);
  const AwqScaleResult r = awq_search_scales({{l.w.data(), l.rows, f}}, l.x.data(), l.tokens, l.cols, {});
  EXPECT_TRUE(r.fell_back);
  for (float s : r.scales) EXPECT_EQ(s, 1.0f);
}

TEST(Awq, SameScalesAndBoundsForAnyThreadCount) {
  const Layer l = layer(100, 256, 300, 10.0, 4);  // 100 rows: a partial block of rows per task
  const auto f = find_format("Q4_K", l.cols);
  std::vector<AwqScaleResult> scales;
  std::vector<std::vector<float>> bounds;
  for (unsigned threads : {1u, 2u, 5u}) {
    AwqConfig cfg;
    cfg.threads = threads;
    cfg.duo_scaling = true;
    scales.push_back(awq_search_scales({{l.w.data(), l.rows, f}}, l.x.data(), l.tokens, l.cols, cfg));
    bounds.push_back(awq_search_clip({l.w.data(), l.rows, f}, l.x.data(), l.tokens, l.cols, 32, cfg));
  }
  for (size_t i = 1; i < scales.size(); ++i) {
    EXPECT_EQ(scales[i].scales, scales[0].scales);
    EXPECT_EQ(scales[i].loss, scales[0].loss);  // bitwise: partial sums are added in task order
    EXPECT_EQ(bounds[i], bounds[0]);
  }
}

TEST(Awq, ActivationStatisticsAndSampling) {
  // mean |x| over every token, the sample evenly strided: tokens 0, 2, 4 of 6 for 3 kept.
  const std::vector<float> x = {1, -2, -3, 4, 5, -6, -7, 8, 9, -10, -11, 12};  // 6 tokens x 2
  const AwqActivations a = awq_activations(x.data(), 6, 2, 3);
  EXPECT_EQ(a.tokens, 6u);
  EXPECT_DOUBLE_EQ(a.mean_abs[0], (1 + 3 + 5 + 7 + 9 + 11) / 6.0);
  EXPECT_DOUBLE_EQ(a.mean_abs[1], (2 + 4 + 6 + 8 + 10 + 12) / 6.0);
  EXPECT_EQ(a.sample_tokens, 3u);
  EXPECT_EQ(a.sample, (std::vector<float>{1, -2, 5, -6, 9, -10}));
}

TEST(Awq, ClipGroupIsTheBlockOrTheKQuantSubBlock) {
  EXPECT_EQ(awq_clip_group(*find_format("Q4_0", 256), 256), 32u);
  EXPECT_EQ(awq_clip_group(*find_format("int4_asym_g128", 256), 256), 128u);
  EXPECT_EQ(awq_clip_group(*find_format("Q4_K", 512), 512), 32u);
  EXPECT_EQ(awq_clip_group(*find_format("Q6_K", 512), 512), 32u);
  EXPECT_EQ(awq_clip_group(*find_format("int4_sym_row", 96), 96), 96u);
  EXPECT_EQ(awq_clip_group(*find_format("int4_sym_tensor", 96), 96), 96u);
}

}  // namespace
}  // namespace qz
