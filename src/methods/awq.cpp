#include "qz/methods/awq.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

namespace qz {

namespace {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Q(w) dequantized, row by row, with the linear's format.
MatF fake_quantize(const Format& f, const MatF& w) {
  MatF q(w.rows(), w.cols());
  std::vector<uint8_t> buf(f.row_bytes(static_cast<size_t>(w.cols())));
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    f.quantize_row(w.row(r).data(), buf.data(), static_cast<size_t>(w.cols()), nullptr);
    f.dequantize_row(buf.data(), q.row(r).data(), static_cast<size_t>(w.cols()));
  }
  return q;
}

}  // namespace

std::vector<float> awq_sample_tokens(const float* x, size_t tokens, size_t cols, size_t max_tokens, size_t* kept) {
  const size_t n = std::min(tokens, std::max<size_t>(1, max_tokens));
  std::vector<float> out(n * cols);
  for (size_t i = 0; i < n; ++i) {
    const size_t src = i * tokens / n;
    std::copy_n(x + src * cols, cols, out.data() + i * cols);
  }
  *kept = n;
  return out;
}

AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& linears, const float* x_all, size_t tokens_all,
                                 size_t cols, const AwqConfig& cfg) {
  size_t tokens = 0;
  const std::vector<float> xs = awq_sample_tokens(x_all, tokens_all, cols, cfg.max_tokens, &tokens);
  const auto n = static_cast<Eigen::Index>(cols);
  const Eigen::Map<const MatF> X(xs.data(), static_cast<Eigen::Index>(tokens), n);

  // Activation statistic: mean |x| per channel over all tokens given.
  std::vector<double> x_mean(cols, 0.0);
  for (size_t t = 0; t < tokens_all; ++t)
    for (size_t j = 0; j < cols; ++j) x_mean[j] += std::fabs(x_all[t * cols + j]);
  for (auto& v : x_mean) v /= static_cast<double>(tokens_all);
  // Weight statistic (duo scaling): |w| normalized by its group's max, averaged over all rows of all linears.
  std::vector<double> w_mean(cols, 0.0);
  size_t total_rows = 0;
  for (const auto& l : linears) {
    const size_t g = l.format->scope() == GridScope::Tensor ? cols : std::min(cols, l.format->block_size());
    for (size_t r = 0; r < l.rows; ++r) {
      for (size_t c0 = 0; c0 < cols; c0 += g) {
        double m = 0;
        for (size_t c = c0; c < c0 + g && c < cols; ++c) m = std::max(m, static_cast<double>(std::fabs(l.w[r * cols + c])));
        for (size_t c = c0; c < c0 + g && c < cols; ++c) w_mean[c] += std::fabs(l.w[r * cols + c]) / (m + 1e-6);
      }
    }
    total_rows += l.rows;
  }
  for (auto& v : w_mean) v /= static_cast<double>(std::max<size_t>(1, total_rows));

  std::vector<MatF> W, Y;
  for (const auto& l : linears) {
    W.emplace_back(Eigen::Map<const MatF>(l.w, static_cast<Eigen::Index>(l.rows), n));
    Y.push_back(X * W.back().transpose());
  }
  auto loss_for = [&](const std::vector<float>& s) {
    double err = 0, count = 0;
    const Eigen::Map<const Eigen::RowVectorXf> sv(s.data(), n);
    for (size_t k = 0; k < linears.size(); ++k) {
      MatF scaled = W[k].array().rowwise() * sv.array();
      MatF q = fake_quantize(*linears[k].format, scaled);
      q.array().rowwise() /= sv.array();
      err += static_cast<double>((X * q.transpose() - Y[k]).squaredNorm());
      count += static_cast<double>(Y[k].size());
    }
    return err / count;
  };

  AwqScaleResult best;
  best.scales.assign(cols, 1.0f);
  best.loss = std::numeric_limits<double>::infinity();
  std::vector<float> s(cols);
  for (int i = 0; i < cfg.grid; ++i) {
    const double alpha = static_cast<double>(i) / cfg.grid;
    for (size_t j = 0; j < cols; ++j) {
      double v = std::pow(x_mean[j], alpha);
      if (cfg.duo_scaling) v /= std::pow(w_mean[j], 1.0 - alpha) + 1e-4;
      s[j] = static_cast<float>(std::max(v, 1e-4));
    }
    const auto [mn, mx] = std::minmax_element(s.begin(), s.end());
    const float norm = std::sqrt(*mx * *mn);
    for (auto& v : s) v = std::isfinite(v / norm) ? v / norm : 1.0f;
    const double loss = loss_for(s);
    if (i == 0) best.loss_unscaled = loss;
    if (std::isfinite(loss) && loss < best.loss) {
      best.loss = loss;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  if (!std::isfinite(best.loss)) {
    best.scales.assign(cols, 1.0f);
    best.alpha = -1.0;
    best.fell_back = true;
  }
  return best;
}

std::vector<float> awq_search_clip(const AwqLinear& l, const float* x_all, size_t tokens_all, size_t cols,
                                   size_t group, const AwqConfig& cfg) {
  size_t tokens = 0;
  const std::vector<float> xs = awq_sample_tokens(x_all, tokens_all, cols, cfg.max_tokens, &tokens);
  const auto n = static_cast<Eigen::Index>(cols);
  const Eigen::Map<const MatF> X(xs.data(), static_cast<Eigen::Index>(tokens), n);
  const Eigen::Map<const MatF> W(l.w, static_cast<Eigen::Index>(l.rows), n);
  const size_t groups = cols / group;
  std::vector<float> bounds(l.rows * groups);
  std::vector<double> best_err(l.rows * groups, std::numeric_limits<double>::infinity());
  for (int i = 0; i < 10; ++i) {
    const float shrink = 1.0f - static_cast<float>(i) / 20.0f;
    MatF clipped = W;
    for (size_t r = 0; r < l.rows; ++r)
      for (size_t g = 0; g < groups; ++g) {
        auto seg = clipped.row(static_cast<Eigen::Index>(r)).segment(static_cast<Eigen::Index>(g * group), static_cast<Eigen::Index>(group));
        const float m = seg.cwiseAbs().maxCoeff() * shrink;
        seg = seg.cwiseMax(-m).cwiseMin(m);
      }
    const MatF q = fake_quantize(*l.format, clipped);
    // Error of each (row, group): the group's share of the output, over the tokens.
    for (size_t g = 0; g < groups; ++g) {
      const auto c0 = static_cast<Eigen::Index>(g * group), w = static_cast<Eigen::Index>(group);
      const MatF diff = X.middleCols(c0, w) * (q.middleCols(c0, w) - W.middleCols(c0, w)).transpose();
      for (size_t r = 0; r < l.rows; ++r) {
        const double e = static_cast<double>(diff.col(static_cast<Eigen::Index>(r)).squaredNorm());
        if (e < best_err[r * groups + g]) {
          best_err[r * groups + g] = e;
          bounds[r * groups + g] = W.row(static_cast<Eigen::Index>(r)).segment(c0, w).cwiseAbs().maxCoeff() * shrink;
        }
      }
    }
  }
  return bounds;
}

}  // namespace qz
