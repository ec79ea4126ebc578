#include "qz/pipeline/quantize.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <cmath>
#include <limits>

#include "qz/core/error.hpp"
#include "qz/core/parallel.hpp"
#include "qz/io/output_file.hpp"
#include "qz/methods/gptq.hpp"
#include "qz/methods/rtn.hpp"
#include "qz/pipeline/importance.hpp"

namespace qz {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kChunkValues = 1 << 16;  // values converted and quantized per task
constexpr size_t kNoBadValue = std::numeric_limits<size_t>::max();

// Index of the first NaN/Inf in x[0..n), or kNoBadValue.
size_t first_non_finite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return kNoBadValue;
}

[[noreturn]] void throw_non_finite(const TensorPlan& t, size_t out_index, float value) {
  // Report the element where the checkpoint has it (before llama.cpp's row permutation).
  size_t index = out_index;
  if (!t.row_order.empty()) {
    index = t.rows == 1 ? t.row_order[out_index]
                        : static_cast<size_t>(t.row_order[out_index / t.cols]) * t.cols + out_index % t.cols;
  }
  throw InputError(fmt::format("{}: tensor '{}': element {} (row {}, column {}) is {}; weights must be finite",
                               t.source->file->path().string(), t.name, index, index / t.cols, index % t.cols,
                               std::isnan(value) ? "NaN" : (value > 0 ? "+Inf" : "-Inf")));
}

// Rows [r0, r0 + nr) of the tensor as the output stores them (after llama.cpp's row permutation, if any), as float.
void read_rows_raw(const TensorPlan& t, size_t r0, size_t nr, float* out) {
  const auto src = t.source->bytes();
  const DType dtype = t.source->tensor->dtype;
  const size_t esize = dtype_size(dtype);
  if (t.row_order.empty()) {
    convert_to_f32(src.data() + r0 * t.cols * esize, dtype, out, nr * t.cols);
  } else if (t.rows == 1) {  // a permuted bias: the order applies to its elements
    for (size_t c = 0; c < t.cols; ++c) convert_to_f32(src.data() + t.row_order[c] * esize, dtype, out + c, 1);
  } else {
    for (size_t r = 0; r < nr; ++r)
      convert_to_f32(src.data() + static_cast<size_t>(t.row_order[r0 + r]) * t.cols * esize, dtype, out + r * t.cols,
                     t.cols);
  }
}

}  // namespace

void read_rows(const TensorPlan& t, size_t r0, size_t nr, float* out) {
  read_rows_raw(t, r0, nr, out);
  if (!t.transform) return;
  const TensorTransform& x = *t.transform;
  for (size_t r = 0; r < nr; ++r) {
    float* row = out + r * t.cols;
    const size_t out_row = r0 + r;
    const size_t src_row = t.row_order.empty() ? out_row : t.row_order[out_row];
    if (!x.col_mul.empty())
      for (size_t c = 0; c < t.cols; ++c) row[c] *= x.col_mul[c];
    if (!x.col_div.empty())
      for (size_t c = 0; c < t.cols; ++c) row[c] /= x.col_div[c];
    if (!x.row_div.empty())
      for (size_t c = 0; c < t.cols; ++c) row[c] /= x.row_div[src_row];  // rows as the checkpoint orders them
    if (!x.clip.empty()) {
      const size_t groups = t.cols / x.clip_group;
      for (size_t g = 0; g < groups; ++g) {
        const float m = x.clip[out_row * groups + g];
        for (size_t c = g * x.clip_group; c < (g + 1) * x.clip_group; ++c) row[c] = std::clamp(row[c], -m, m);
      }
    }
  }
}

std::vector<float> read_tensor(const TensorPlan& t) {
  std::vector<float> v(t.rows * t.cols);
  read_rows(t, 0, t.rows, v.data());
  return v;
}

std::shared_ptr<const Eigen::MatrixXd> HessianCache::get(const TensorPlan& t, unsigned threads, uint64_t* tokens) {
  std::string key;
  for (const auto& in : t.calibration) key += in.key() + ";";
  for (const auto& e : entries_) {
    if (e.key == key) {
      *tokens = e.tokens;
      return e.h;
    }
  }
  auto h = std::make_shared<const Eigen::MatrixXd>(hessian_of(t.calibration, t.cols, threads, tokens));
  entries_.push_back({key, h, *tokens});
  if (entries_.size() > 2) entries_.erase(entries_.begin());
  return h;
}

namespace {

// tr(E H E^T) for E = A - B (rows x cols, row-major).
double h_norm(const float* a, const float* b, size_t rows, size_t cols, const Eigen::MatrixXf& Hf) {
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  double total = 0.0;
  const size_t chunk = 64;
  MatF E;
  for (size_t r0 = 0; r0 < rows; r0 += chunk) {
    const auto nr = static_cast<Eigen::Index>(std::min(chunk, rows - r0));
    const auto n = static_cast<Eigen::Index>(cols);
    E = Eigen::Map<const MatF>(a + r0 * cols, nr, n);
    if (b != nullptr) E -= Eigen::Map<const MatF>(b + r0 * cols, nr, n);
    const MatF EH = E * Hf;
    total += static_cast<double>(EH.cwiseProduct(E).sum());
  }
  return total;
}

QuantizedTensor quantize_tensor_gptq(const TensorPlan& t, const QuantizeOptions& opts, HessianCache* cache,
                                     const std::function<void(double)>& progress) {
  const Format& f = *t.format;
  const unsigned threads = opts.effective_threads();
  std::vector<float> w(t.rows * t.cols);
  read_rows(t, 0, t.rows, w.data());
  if (const size_t bad = first_non_finite(w.data(), w.size()); bad != kNoBadValue) throw_non_finite(t, bad, w[bad]);
  HessianCache local;
  GptqReport rep;
  auto H = (cache ? cache : &local)->get(t, threads, &rep.tokens);
  if (t.transform && !t.transform->col_mul.empty()) {  // AWQ divided the inputs by s: H' = S^-1 H S^-1
    auto scaled = std::make_shared<Eigen::MatrixXd>(*H);
    const auto& s = t.transform->col_mul;
    for (Eigen::Index i = 0; i < scaled->rows(); ++i)
      for (Eigen::Index j = 0; j < scaled->cols(); ++j)
        (*scaled)(i, j) /= static_cast<double>(s[static_cast<size_t>(i)]) * s[static_cast<size_t>(j)];
    H = scaled;
  }
  if (progress) progress(0.3);
  GptqConfig cfg;
  cfg.damp = opts.damp;
  cfg.block_size = static_cast<size_t>(opts.block_size);
  cfg.act_order = opts.act_order;
  cfg.static_groups = opts.static_groups;
  QuantizedTensor out;
  out.bytes.resize(t.rows * f.row_bytes(t.cols));
  GptqStats stats;
  try {
    stats = gptq_quantize(f, w.data(), t.rows, t.cols, *H, cfg, threads, out.bytes.data());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("tensor '{}': {}", t.name, e.what()));
  }
  if (progress) progress(0.9);
  rep.loss = stats.loss;
  rep.damp = stats.damp;
  rep.dead_columns = stats.dead_columns;
  std::vector<float> q(w.size());
  const size_t rb = f.row_bytes(t.cols);
  for (size_t r = 0; r < t.rows; ++r) f.dequantize_row(out.bytes.data() + r * rb, q.data() + r * t.cols, t.cols);
  out.error.add(w.data(), q.data(), w.size());
  const Eigen::MatrixXf Hf = H->cast<float>();
  const double signal = h_norm(w.data(), nullptr, t.rows, t.cols, Hf);
  rep.output_rel_error = signal > 0 ? h_norm(w.data(), q.data(), t.rows, t.cols, Hf) / signal : 0.0;
  if (opts.compare_rtn) {
    std::vector<uint8_t> rtn(out.bytes.size());
    rtn_quantize_rows(f, w.data(), t.rows, t.cols, nullptr, nullptr, rtn.data());
    for (size_t r = 0; r < t.rows; ++r) f.dequantize_row(rtn.data() + r * rb, q.data() + r * t.cols, t.cols);
    rep.rtn_output_rel_error = signal > 0 ? h_norm(w.data(), q.data(), t.rows, t.cols, Hf) / signal : 0.0;
  }
  out.gptq = rep;
  return out;
}

template <typename T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

QuantizedTensor quantize_tensor_nf4(const TensorPlan& t) {
  std::vector<float> w(t.rows * t.cols);
  read_rows(t, 0, t.rows, w.data());
  if (const size_t bad = first_non_finite(w.data(), w.size()); bad != kNoBadValue) throw_non_finite(t, bad, w[bad]);
  const Nf4Tensor q = quantize_nf4(w.data(), w.size(), *t.nf4);
  QuantizedTensor out;
  out.bytes = q.packed;
  if (t.nf4->double_quant) {
    out.companions = {q.qabsmax, as_bytes(q.nested_absmax), as_bytes(std::vector<float>{q.nested_offset})};
  } else {
    out.companions = {as_bytes(q.absmax)};
  }
  std::vector<float> y(w.size());
  dequantize_nf4(q, *t.nf4, y.data());
  out.error.add(w.data(), y.data(), w.size());
  return out;
}

}  // namespace

QuantizedTensor quantize_tensor(const TensorPlan& t, const QuantizeOptions& opts, HessianCache* cache,
                                const std::function<void(double)>& progress) {
  if (t.gptq) return quantize_tensor_gptq(t, opts, cache, progress);
  if (t.nf4) return quantize_tensor_nf4(t);
  const unsigned threads = opts.effective_threads();
  const Format& f = *t.format;
  const size_t row_bytes = f.row_bytes(t.cols);
  QuantizedTensor out;
  out.bytes.resize(t.rows * row_bytes);

  std::optional<BlockGrid> tensor_grid;
  if (f.scope() == GridScope::Tensor) {
    // One grid for the whole tensor: fit it on all values first.
    std::vector<float> all(t.rows * t.cols);
    read_rows(t, 0, t.rows, all.data());
    if (const size_t bad = first_non_finite(all.data(), all.size()); bad != kNoBadValue)
      throw_non_finite(t, bad, all[bad]);
    tensor_grid = rtn_fit_tensor(f, all.data(), all.size());
  }

  // The imatrix holds E[x_j^2] of the original inputs; AWQ divided input j by s_j, so its weight is E[x_j^2] / s_j^2.
  const float* importance = t.importance ? t.importance->data() : nullptr;
  std::vector<float> scaled_importance;
  if (importance && t.transform && !t.transform->col_mul.empty()) {
    scaled_importance = *t.importance;
    for (size_t c = 0; c < scaled_importance.size(); ++c)
      scaled_importance[c] /= t.transform->col_mul[c] * t.transform->col_mul[c];
    importance = scaled_importance.data();
  }
  const size_t rows_per_chunk = std::max<size_t>(1, kChunkValues / std::max<size_t>(1, t.cols));
  const size_t chunks = (t.rows + rows_per_chunk - 1) / rows_per_chunk;
  const unsigned workers = static_cast<unsigned>(std::min<size_t>(std::max(1u, threads), chunks));
  std::vector<std::vector<float>> xbuf(workers), ybuf(workers);
  std::vector<ErrorStats> stats(chunks);
  std::vector<size_t> bad(chunks, kNoBadValue);
  std::atomic<size_t> done{0};

  parallel_for(chunks, workers, [&](size_t c, unsigned w) {
    const size_t r0 = c * rows_per_chunk;
    const size_t nr = std::min(rows_per_chunk, t.rows - r0);
    const size_t n = nr * t.cols;
    auto& x = xbuf[w];
    auto& y = ybuf[w];
    x.resize(rows_per_chunk * t.cols);
    y.resize(rows_per_chunk * t.cols);
    read_rows(t, r0, nr, x.data());
    if (const size_t b = first_non_finite(x.data(), n); b != kNoBadValue) {
      bad[c] = r0 * t.cols + b;
      return;
    }
    uint8_t* dst = out.bytes.data() + r0 * row_bytes;
    rtn_quantize_rows(f, x.data(), nr, t.cols, importance,
                      tensor_grid ? &*tensor_grid : nullptr, dst);
    for (size_t r = 0; r < nr; ++r) f.dequantize_row(dst + r * row_bytes, y.data() + r * t.cols, t.cols);
    stats[c].add(x.data(), y.data(), n);
    const size_t finished = done.fetch_add(1) + 1;
    if (w == 0 && progress) progress(static_cast<double>(finished) / static_cast<double>(chunks));
  });

  for (size_t c = 0; c < chunks; ++c) {
    if (bad[c] != kNoBadValue) {
      std::vector<float> row(t.cols);
      read_rows(t, bad[c] / t.cols, 1, row.data());
      throw_non_finite(t, bad[c], row[bad[c] % t.cols]);
    }
    out.error.merge(stats[c]);
  }
  return out;
}

Report quantize_to_gguf(const Checkpoint& ckpt, const Plan& plan, const QuantizeOptions& opts,
                        const std::filesystem::path& output, bool overwrite, ProgressSink* progress) {
  const auto t0 = Clock::now();
  Report report = report_from_plan(plan);
  report.dry_run = false;
  report.input = ckpt.source().string();
  report.output = output.string();
  report.method = method_name(opts.method);
  report.threads = opts.effective_threads();

  GgufWriter writer = make_gguf_layout(plan, ckpt, opts);
  OutputFile out(output, overwrite);
  HessianCache hessians;
  writer.write_header(out);
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const TensorPlan& t = plan.tensors[i];
    if (progress) progress->begin_tensor(i, plan.tensors.size(), t);
    const auto ts = Clock::now();
    QuantizedTensor q = quantize_tensor(t, opts, &hessians, [&](double frac) {
      if (progress) progress->advance(frac);
    });
    writer.write_tensor_data(out, q.bytes);
    for (const auto& c : q.companions) writer.write_tensor_data(out, c);
    TensorReport& tr = report.tensors[i];
    tr.error = q.error;
    tr.gptq = q.gptq;
    tr.seconds = std::chrono::duration<double>(Clock::now() - ts).count();
    if (progress) progress->end_tensor(tr);
  }
  writer.finish();
  out.commit();
  report.output_bytes = writer.file_bytes();
  report.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report.peak_memory_bytes = peak_memory_bytes();
  return report;
}

}  // namespace qz
