#include "qz/methods/awq.hpp"

#include <cblas.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>

#include "qz/core/blas.hpp"
#include "qz/core/parallel.hpp"

namespace qz {

namespace {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Output rows per task: large blocks keep the output products efficient GEMMs (measured on bench_awq: 128 for the
// scale search, 32 for the clipping search whose products are per group anyway).
constexpr Eigen::Index kRowsPerTask = 128;
constexpr Eigen::Index kClipRowsPerTask = 32;

// Rows of w replaced by Q(w), dequantized, with the linear's format.
void fake_quantize_rows(const Format& f, MatF& w) {
  std::vector<uint8_t> buf(f.row_bytes(static_cast<size_t>(w.cols())));
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    f.quantize_row(w.row(r).data(), buf.data(), static_cast<size_t>(w.cols()), nullptr);
    f.dequantize_row(buf.data(), w.row(r).data(), static_cast<size_t>(w.cols()));
  }
}

size_t clip_tasks_for(size_t rows) { return (rows + kClipRowsPerTask - 1) / kClipRowsPerTask; }

// out[tokens x nr] = X[tokens x k] D[nr x k]^T, X and D row-major with leading dimensions ldx and ldd: one
// single-threaded OpenBLAS sgemm (each task's own, so the bits do not depend on the thread count).
void x_times_dt(const float* x, size_t tokens, size_t ldx, const float* d, size_t nr, size_t ldd, size_t k, float* out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(tokens), static_cast<int>(nr), static_cast<int>(k),
              1.0f, x, static_cast<int>(ldx), d, static_cast<int>(ldd), 0.0f, out, static_cast<int>(nr));
}

double sum_of_squares(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * static_cast<double>(x);
  return s;
}

}  // namespace

AwqActivationBuilder::AwqActivationBuilder(size_t cols, uint64_t total_tokens, size_t max_tokens) {
  a_.cols = cols;
  a_.tokens = total_tokens;
  a_.mean_abs.assign(cols, 0.0);
  a_.sample_tokens = static_cast<size_t>(std::min<uint64_t>(total_tokens, std::max<size_t>(1, max_tokens)));
  a_.sample.resize(a_.sample_tokens * cols);
}

void AwqActivationBuilder::add(const float* x, size_t tokens) {
  const size_t cols = a_.cols;
  for (size_t t = 0; t < tokens; ++t, ++seen_) {
    const float* row = x + t * cols;
    for (size_t j = 0; j < cols; ++j) a_.mean_abs[j] += std::fabs(row[j]);
    if (next_ < a_.sample_tokens && next_ * a_.tokens / a_.sample_tokens == seen_) {
      std::copy_n(row, cols, a_.sample.data() + next_ * cols);
      ++next_;
    }
  }
}

AwqActivations AwqActivationBuilder::finish() {
  for (auto& v : a_.mean_abs) v /= static_cast<double>(std::max<uint64_t>(1, a_.tokens));
  return std::move(a_);
}

AwqActivations awq_activations(const float* x, size_t tokens, size_t cols, size_t max_tokens) {
  AwqActivationBuilder b(cols, tokens, max_tokens);
  b.add(x, tokens);
  return b.finish();
}

size_t awq_clip_group(const Format& f, size_t cols) {
  if (f.scope() == GridScope::Tensor) return cols;
  const size_t b = f.block_size();
  if (b >= 256 && b % 32 == 0 && cols % 32 == 0) return 32;  // K-quant super-block: its scales cover 16 or 32
  return std::min(b, cols);
}

AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& linears, const float* x, size_t tokens, size_t cols,
                                 const AwqConfig& cfg) {
  return awq_search_scales(linears, awq_activations(x, tokens, cols, cfg.max_tokens), cfg);
}

AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& linears, const AwqActivations& act,
                                 const AwqConfig& cfg) {
  return awq_search_scales(linears, act, cfg, {});
}

AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& linears, const AwqActivations& act, const AwqConfig& cfg,
                                 const AwqModuleLoss& module_loss) {
  const size_t cols = act.cols;
  const auto n = static_cast<Eigen::Index>(cols);

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

  // Tasks: (linear, block of rows). A task's output error is X (Q(W s)/s - W)^T: the product of the difference, so
  // that neither the reference outputs X W^T are kept nor the error taken as a difference of two large products.
  struct Task {
    size_t linear;
    Eigen::Index r0, nr;
  };
  std::vector<Task> tasks;
  double count = 0;
  for (size_t k = 0; k < linears.size(); ++k) {
    const auto rows = static_cast<Eigen::Index>(linears[k].rows);
    for (Eigen::Index r0 = 0; r0 < rows; r0 += kRowsPerTask) tasks.push_back({k, r0, std::min(kRowsPerTask, rows - r0)});
    count += static_cast<double>(rows) * static_cast<double>(act.sample_tokens);
  }
  auto block_of = [&](const Task& t) {
    return Eigen::Map<const MatF>(linears[t.linear].w, static_cast<Eigen::Index>(linears[t.linear].rows), n).middleRows(t.r0, t.nr);
  };
  use_single_threaded_blas();

  std::vector<double> partial(tasks.size());
  std::vector<std::vector<float>> quantized(linears.size());
  auto module_loss_for = [&](const std::vector<float>& s) {
    const Eigen::Map<const Eigen::RowVectorXf> sv(s.data(), n);
    for (size_t k = 0; k < linears.size(); ++k) quantized[k].resize(linears[k].rows * cols);
    parallel_for(tasks.size(), cfg.threads, [&](size_t i, unsigned) {
      const Task& t = tasks[i];
      MatF q = block_of(t).array().rowwise() * sv.array();
      fake_quantize_rows(*linears[t.linear].format, q);
      q.array().rowwise() /= sv.array();
      Eigen::Map<MatF>(quantized[t.linear].data() + static_cast<size_t>(t.r0) * cols, t.nr, n) = q;
    });
    return module_loss(quantized);
  };
  auto loss_for = [&](const std::vector<float>& s) {
    if (module_loss) return module_loss_for(s);
    const Eigen::Map<const Eigen::RowVectorXf> sv(s.data(), n);
    parallel_for(tasks.size(), cfg.threads, [&](size_t i, unsigned) {
      const Task& t = tasks[i];
      MatF q = block_of(t).array().rowwise() * sv.array();
      fake_quantize_rows(*linears[t.linear].format, q);
      q.array().rowwise() /= sv.array();
      q -= block_of(t);
      std::vector<float> e(act.sample_tokens * static_cast<size_t>(t.nr));
      x_times_dt(act.sample.data(), act.sample_tokens, cols, q.data(), static_cast<size_t>(t.nr), cols, cols, e.data());
      partial[i] = sum_of_squares(e);
    });
    double err = 0;
    for (double p : partial) err += p;  // task order: the same sum for any thread count
    return err / count;
  };

  AwqScaleResult best;
  best.scales.assign(cols, 1.0f);
  best.loss = std::numeric_limits<double>::infinity();
  std::vector<float> s(cols);
  for (int i = 0; i < cfg.grid; ++i) {
    const double alpha = static_cast<double>(i) / cfg.grid;
    for (size_t j = 0; j < cols; ++j) {
      double v = std::pow(act.mean_abs[j], alpha);
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
  const AwqActivations sampled = awq_activations(x_all, tokens_all, cols, cfg.max_tokens);
  const std::vector<float>& xs = sampled.sample;
  tokens = sampled.sample_tokens;
  return awq_search_clip_sampled(l, xs.data(), tokens, cols, group, cfg);
}

std::vector<float> awq_search_clip_sampled(const AwqLinear& l, const float* x, size_t tokens, size_t cols,
                                           size_t group, const AwqConfig& cfg) {
  const auto n = static_cast<Eigen::Index>(cols);
  const Eigen::Map<const MatF> W(l.w, static_cast<Eigen::Index>(l.rows), n);
  const size_t groups = cols / group;
  std::vector<float> bounds(l.rows * groups);
  use_single_threaded_blas();
  // Each task: a block of rows, all shrink steps; a (row, group) keeps the bound with the least error on its share
  // of the output.
  parallel_for(clip_tasks_for(l.rows), cfg.threads, [&](size_t task, unsigned) {
    const Eigen::Index r0 = static_cast<Eigen::Index>(task) * kClipRowsPerTask;
    const Eigen::Index nr = std::min(kClipRowsPerTask, static_cast<Eigen::Index>(l.rows) - r0);
    const MatF w = W.middleRows(r0, nr);
    std::vector<double> best_err(static_cast<size_t>(nr) * groups, std::numeric_limits<double>::infinity());
    for (int i = 0; i < 10; ++i) {
      const float shrink = 1.0f - static_cast<float>(i) / 20.0f;
      MatF q = w;
      std::vector<float> m(static_cast<size_t>(nr) * groups);
      for (Eigen::Index r = 0; r < nr; ++r)
        for (size_t g = 0; g < groups; ++g) {
          auto seg = q.row(r).segment(static_cast<Eigen::Index>(g * group), static_cast<Eigen::Index>(group));
          const float b = seg.cwiseAbs().maxCoeff() * shrink;
          m[static_cast<size_t>(r) * groups + g] = b;
          seg = seg.cwiseMax(-b).cwiseMin(b);
        }
      fake_quantize_rows(*l.format, q);
      q -= w;
      std::vector<float> diff(tokens * static_cast<size_t>(nr));  // [tokens x nr]: X_g (q_g - w_g)^T
      for (size_t g = 0; g < groups; ++g) {
        x_times_dt(x + g * group, tokens, cols, q.data() + g * group, static_cast<size_t>(nr), cols, group, diff.data());
        for (Eigen::Index r = 0; r < nr; ++r) {
          const size_t k = static_cast<size_t>(r) * groups + g;
          double e = 0;
          for (size_t t = 0; t < tokens; ++t) {
            const double v = diff[t * static_cast<size_t>(nr) + static_cast<size_t>(r)];
            e += v * v;
          }
          if (e < best_err[k]) {
            best_err[k] = e;
            bounds[(static_cast<size_t>(r0 + r)) * groups + g] = m[k];
          }
        }
      }
    }
  });
  return bounds;
}

}  // namespace qz
