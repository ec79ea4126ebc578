#include "qz/pipeline/quantize.hpp"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <cmath>
#include <limits>

#include "qz/core/finite.hpp"
#include "qz/core/blas.hpp"
#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/legacy_quants.hpp"
#include "qz/core/parallel.hpp"
#include "qz/io/output_file.hpp"
#include "qz/methods/gptq.hpp"
#include "qz/methods/rtn.hpp"
#include "qz/calibration/statistics.hpp"
#include "qz/pipeline/gguf_layout.hpp"

namespace qz {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kChunkValues = 1 << 16;  // values converted and quantized per task

}  // namespace

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

// The rows the output error is measured on: all of them up to kOutputErrorRows, else that many evenly spaced.
constexpr size_t kOutputErrorRows = 512;
std::vector<size_t> output_error_rows(size_t rows) {
  const size_t n = std::min(rows, kOutputErrorRows);
  std::vector<size_t> r(n);
  for (size_t k = 0; k < n; ++k) r[k] = k * rows / n;
  return r;
}

// tr(E H E^T) of E = A - B (rows x cols, row-major; B null for E = A), for each (A, B) given:
// chunks of 128 rows (each sgemm packs H once: larger chunks pay that less often), each one single-threaded sgemm
// against H (symmetric, cols x cols), spread over threads; the chunks' sums are added in order, so the figure is the
// same for any thread count.
std::vector<double> h_norms(const std::vector<std::pair<const float*, const float*>>& mats, size_t rows, size_t cols,
                            const float* H, unsigned threads) {
  constexpr size_t kChunk = 128;
  const size_t chunks = (rows + kChunk - 1) / kChunk;
  std::vector<double> part(chunks * mats.size(), 0.0);
  use_single_threaded_blas();
  parallel_for(chunks, threads, [&](size_t c, unsigned) {
    const size_t k0 = c * kChunk, nk = std::min(kChunk, rows - k0);
    std::vector<float> E(nk * cols), EH(nk * cols);
    for (size_t m = 0; m < mats.size(); ++m) {
      const auto [a, b] = mats[m];
      for (size_t k = 0; k < nk; ++k) {
        const float* ar = a + (k0 + k) * cols;
        const float* br = b ? b + (k0 + k) * cols : nullptr;
        for (size_t j = 0; j < cols; ++j) E[k * cols + j] = br ? ar[j] - br[j] : ar[j];
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nk), static_cast<int>(cols),
                  static_cast<int>(cols), 1.0f, E.data(), static_cast<int>(cols), H, static_cast<int>(cols), 0.0f,
                  EH.data(), static_cast<int>(cols));
      double sum = 0.0;
      for (size_t i = 0; i < nk * cols; ++i) sum += static_cast<double>(EH[i]) * E[i];
      part[c * mats.size() + m] = sum;
    }
  });
  std::vector<double> total(mats.size(), 0.0);
  for (size_t c = 0; c < chunks; ++c)
    for (size_t m = 0; m < mats.size(); ++m) total[m] += part[c * mats.size() + m];
  return total;
}

}  // namespace

QuantizedTensor quantize_tensor_gptq(const TensorPlan& t, const GptqSettings& settings, const Eigen::MatrixXd& hessian,
                                     uint64_t tokens, unsigned threads, const std::function<void(double)>& progress,
                                     HessianOf of) {
  const Format& f = *t.format;
  const std::vector<float> w = read_finite_tensor(t, threads);
  GptqReport rep;
  rep.tokens = tokens;
  const Eigen::MatrixXd* H = &hessian;
  Eigen::MatrixXd scaled;
  if (of == HessianOf::OriginalInputs && t.transform && !t.transform->col_mul.empty()) {
    // AWQ divided the inputs by s: H' = S^-1 H S^-1
    scaled = hessian;
    const auto& s = t.transform->col_mul;
    for (Eigen::Index i = 0; i < scaled.rows(); ++i)
      for (Eigen::Index j = 0; j < scaled.cols(); ++j)
        scaled(i, j) /= static_cast<double>(s[static_cast<size_t>(i)]) * s[static_cast<size_t>(j)];
    H = &scaled;
  }
  if (progress) progress(0.3);
  QuantizedTensor out;
  out.parts.emplace_back(t.rows * f.row_bytes(t.cols));
  std::vector<uint8_t>& bytes = out.parts.front();
  GptqStats stats;
  std::shared_ptr<const float> hf;  // H in float, for the output error
  try {
    stats = gptq_quantize(f, w.data(), t.rows, t.cols, *H, settings.config, threads, bytes.data(), &hf);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("tensor '{}': {}", t.name, e.what()));
  }
  if (progress) progress(0.9);
  rep.loss = stats.loss;
  rep.damp = stats.damp;
  rep.factor_seconds = stats.factor_seconds;
  rep.update_seconds = stats.update_seconds;
  rep.refine_seconds = stats.refine_seconds;
  rep.refine_gain = stats.refine_gain;
  rep.dead_columns = stats.dead_columns;
  // The stored values: their error statistics over all rows (fixed chunks over threads, merged in order), and the
  // rows the output error is measured on.
  const size_t rb = f.row_bytes(t.cols);
  {
    const size_t rows_per_chunk = std::max<size_t>(1, kChunkValues / std::max<size_t>(1, t.cols));
    const size_t chunks = (t.rows + rows_per_chunk - 1) / rows_per_chunk;
    std::vector<ErrorStats> chunk_error(chunks);
    parallel_for(chunks, threads, [&](size_t c, unsigned) {
      const size_t r0 = c * rows_per_chunk, nr = std::min(rows_per_chunk, t.rows - r0);
      std::vector<float> y(nr * t.cols);
      for (size_t r = 0; r < nr; ++r) f.dequantize_row(bytes.data() + (r0 + r) * rb, y.data() + r * t.cols, t.cols);
      chunk_error[c].add(w.data() + r0 * t.cols, y.data(), y.size());
    });
    for (const ErrorStats& e : chunk_error) out.error.merge(e);
  }
  const auto te = Clock::now();
  const std::vector<size_t> rows_used = output_error_rows(t.rows);
  const size_t nu = rows_used.size();
  std::vector<float> w_used(nu * t.cols), q_used(nu * t.cols);
  for (size_t k = 0; k < nu; ++k) {
    std::copy_n(w.data() + rows_used[k] * t.cols, t.cols, w_used.data() + k * t.cols);
    f.dequantize_row(bytes.data() + rows_used[k] * rb, q_used.data() + k * t.cols, t.cols);
  }
  std::vector<std::pair<const float*, const float*>> mats = {{w_used.data(), nullptr}, {w_used.data(), q_used.data()}};
  std::vector<float> rtn_values;
  if (settings.compare_rtn) {
    std::vector<uint8_t> rtn(nu * rb);
    rtn_quantize_rows(f, w_used.data(), nu, t.cols, nullptr, nullptr, rtn.data());
    rtn_values.resize(nu * t.cols);
    for (size_t k = 0; k < nu; ++k) f.dequantize_row(rtn.data() + k * rb, rtn_values.data() + k * t.cols, t.cols);
    mats.emplace_back(w_used.data(), rtn_values.data());
  }
  const std::vector<double> norms = h_norms(mats, nu, t.cols, hf.get(), threads);
  const double signal = norms[0];
  rep.output_error_rows = nu;
  rep.output_rel_error = signal > 0 ? norms[1] / signal : 0.0;
  if (settings.compare_rtn) rep.rtn_output_rel_error = signal > 0 ? norms[2] / signal : 0.0;
  rep.output_error_seconds = std::chrono::duration<double>(Clock::now() - te).count();
  out.gptq = rep;
  return out;
}

namespace {

// A GPTQ / AWQ linear whose grid the target type holds exactly (model/packed_linear.hpp): its codes and scales are
// stored as they are, blocks of 32 repeating their group's scale (and min m = fp16(-scale * zero) for Q4_1). The
// error is measured against the checkpoint's own dequantized values: zero but for Q4_1's rounding of m.
QuantizedTensor carry_packed_codes(const TensorPlan& t) {
  const PackedLinear& p = *t.packed;
  const GgmlType type = t.format->storage_type();
  const size_t rb = t.format->row_bytes(t.cols);
  QuantizedTensor out;
  out.parts.emplace_back(t.rows * rb);
  std::vector<int32_t> q(t.cols), block(32);
  std::vector<float> truth(t.cols), stored(t.cols);
  for (size_t r = 0; r < t.rows; ++r) {
    const size_t j = t.row_order.empty() ? r : t.row_order[r];
    p.codes_of_row(j, q.data());
    uint8_t* dst = out.parts.front().data() + r * rb;
    for (size_t b = 0; b < t.cols / 32; ++b) {
      const size_t g = p.group_of(b * 32);
      const int32_t zero = p.zero(g, j);
      const uint16_t d = p.scale_bits(g, j);
      const uint16_t m = type == GgmlType::Q4_1 ? fp32_to_fp16(-fp16_to_fp32(d) * static_cast<float>(zero)) : 0;
      for (size_t k = 0; k < 32; ++k) block[k] = q[b * 32 + k] - (type == GgmlType::Q8_0 ? 128 : 0);
      encode_legacy_block(type, d, m, block.data(), dst + b * ggml_type_traits(type).type_size);
    }
    p.dequantize_row(j, truth.data());
    t.format->dequantize_row(dst, stored.data(), t.cols);
    out.error.add(truth.data(), stored.data(), t.cols);
  }
  return out;
}

// A whole-tensor format (NF4/FP4): all values at once.
QuantizedTensor quantize_whole_tensor(const TensorPlan& t) {
  const std::vector<float> w = read_finite_tensor(t);
  QuantizedTensor out;
  out.parts = t.format->quantize_tensor(w.data(), w.size());
  std::vector<std::span<const uint8_t>> parts(out.parts.begin(), out.parts.end());
  std::vector<float> y(w.size());
  t.format->dequantize_tensor(parts, w.size(), t.cols, y.data());
  out.error.add(w.data(), y.data(), w.size());
  return out;
}

}  // namespace

QuantizedTensor quantize_tensor(const TensorPlan& t, const QuantizeConfig& cfg, HessianCache* cache,
                                const std::function<void(double)>& progress) {
  const unsigned threads = cfg.threads;
  if (t.gptq) {
    if (!cfg.gptq) throw std::logic_error("quantize_tensor: a GPTQ tensor without GPTQ settings");
    HessianCache local;
    uint64_t tokens = 0;
    const auto th = Clock::now();
    const auto H = (cache ? cache : &local)->get(t, threads, &tokens);
    const double hessian_seconds = std::chrono::duration<double>(Clock::now() - th).count();
    QuantizedTensor q = quantize_tensor_gptq(t, *cfg.gptq, *H, tokens, threads, progress);
    q.gptq->hessian_seconds = hessian_seconds;
    return q;
  }
  if (t.format->whole_tensor()) return quantize_whole_tensor(t);
  if (t.carry_codes) return carry_packed_codes(t);
  const Format& f = *t.format;
  const size_t row_bytes = f.row_bytes(t.cols);
  QuantizedTensor out;
  out.parts.emplace_back(t.rows * row_bytes);
  std::vector<uint8_t>& bytes = out.parts.front();

  std::optional<BlockGrid> tensor_grid;
  if (f.scope() == GridScope::Tensor) {
    // One grid for the whole tensor: fit it on all values first.
    const std::vector<float> all = read_finite_tensor(t);
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
  std::vector<size_t> bad(chunks, SIZE_MAX);
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
    if (const size_t b = first_non_finite(x.data(), n); b != SIZE_MAX) {
      bad[c] = r0 * t.cols + b;
      return;
    }
    uint8_t* dst = bytes.data() + r0 * row_bytes;
    rtn_quantize_rows(f, x.data(), nr, t.cols, importance,
                      tensor_grid ? &*tensor_grid : nullptr, dst);
    for (size_t r = 0; r < nr; ++r) f.dequantize_row(dst + r * row_bytes, y.data() + r * t.cols, t.cols);
    stats[c].add(x.data(), y.data(), n);
    const size_t finished = done.fetch_add(1) + 1;
    if (w == 0 && progress) progress(static_cast<double>(finished) / static_cast<double>(chunks));
  });

  for (size_t c = 0; c < chunks; ++c) {
    if (bad[c] != SIZE_MAX) {
      std::vector<float> row(t.cols);
      read_rows(t, bad[c] / t.cols, 1, row.data());
      throw_non_finite(t, bad[c], row[bad[c] % t.cols]);
    }
    out.error.merge(stats[c]);
  }
  return out;
}

std::vector<float> stored_values(const TensorPlan& t, const QuantizedTensor& q) {
  std::vector<float> y(t.numel());
  std::vector<std::span<const uint8_t>> parts(q.parts.begin(), q.parts.end());
  if (t.format->whole_tensor()) {
    t.format->dequantize_tensor(parts, y.size(), t.cols, y.data());
    return y;
  }
  const size_t rb = t.format->row_bytes(t.cols);
  for (size_t r = 0; r < t.rows; ++r) t.format->dequantize_row(parts.front().data() + r * rb, y.data() + r * t.cols, t.cols);
  return y;
}

namespace {

class GgufSink final : public TensorSink {
 public:
  GgufSink(const Checkpoint& ckpt, const Plan& plan, const std::filesystem::path& output, bool overwrite)
      : writer_(make_gguf_layout(plan), output, plan.config.split, overwrite, ckpt.paths()) {}
  void write(const TensorPlan&, const QuantizedTensor& q) override {
    for (const auto& part : q.parts) writer_.write_tensor_data(part);
  }
  void commit() override { writer_.commit(); }
  uint64_t bytes() const override { return writer_.file_bytes(); }
  std::vector<std::string> paths() const override {
    std::vector<std::string> out;
    for (const auto& p : writer_.paths()) out.push_back(p.string());
    return out;
  }

 private:
  GgufSplitWriter writer_;
};

}  // namespace

Report quantize_into(const Checkpoint& ckpt, const Plan& plan, TensorSink& sink, ProgressSink* progress,
                     TensorProducer* producer) {
  const auto t0 = Clock::now();
  Report report = report_from_plan(plan);
  report.dry_run = false;
  report.input = ckpt.source().string();
  HessianCache hessians;
  // Tensor i is written by a second thread while tensor i + 1 is quantized (one tensor in flight: the next write
  // waits for the previous one, so the file's order and the memory bound hold, and a write error surfaces there).
  std::future<void> writing;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const TensorPlan& t = plan.tensors[i];
    if (progress) progress->begin_tensor(i, plan.tensors.size(), t);
    const auto ts = Clock::now();
    std::optional<QuantizedTensor> made;
    if (producer) made = producer->take(i);
    QuantizedTensor q = made ? std::move(*made) : quantize_tensor(t, plan.config, &hessians, [&](double frac) {
      if (progress) progress->advance(frac);
    });
    release_source_pages(t);
    TensorReport& tr = report.tensors[i];
    tr.error = q.error;
    tr.gptq = q.gptq;
    tr.seconds = q.seconds ? *q.seconds : std::chrono::duration<double>(Clock::now() - ts).count();
    if (writing.valid()) writing.get();
    writing = std::async(std::launch::async, [&sink, &t, q = std::move(q)] { sink.write(t, q); });
    if (progress) progress->end_tensor(tr);
  }
  if (writing.valid()) writing.get();
  sink.commit();
  report.output_bytes = sink.bytes();
  const auto paths = sink.paths();
  report.output = paths.front();
  if (paths.size() > 1) report.output_parts = paths;
  report.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report.peak_memory_bytes = peak_memory_bytes();
  return report;
}

Report quantize_to_gguf(const Checkpoint& ckpt, const Plan& plan, const std::filesystem::path& output, bool overwrite,
                        ProgressSink* progress, TensorProducer* producer) {
  GgufSink sink(ckpt, plan, output, overwrite);
  return quantize_into(ckpt, plan, sink, progress, producer);
}

}  // namespace qz
