#include "qz/pipeline/quantize.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <cmath>
#include <limits>

#include "qz/core/error.hpp"
#include "qz/core/parallel.hpp"
#include "qz/io/output_file.hpp"
#include "qz/methods/rtn.hpp"

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

[[noreturn]] void throw_non_finite(const TensorPlan& t, size_t index, float value) {
  throw InputError(fmt::format("{}: tensor '{}': element {} (row {}, column {}) is {}; weights must be finite",
                               t.source->file->path().string(), t.name, index, index / t.cols, index % t.cols,
                               std::isnan(value) ? "NaN" : (value > 0 ? "+Inf" : "-Inf")));
}

}  // namespace

QuantizedTensor quantize_tensor(const TensorPlan& t, unsigned threads, const std::function<void(double)>& progress) {
  const Format& f = *t.format;
  const auto src = t.source->bytes();
  const DType dtype = t.source->tensor->dtype;
  const size_t esize = dtype_size(dtype);
  const size_t row_bytes = f.row_bytes(t.cols);
  QuantizedTensor out;
  out.bytes.resize(t.rows * row_bytes);

  std::optional<BlockGrid> tensor_grid;
  if (f.scope() == GridScope::Tensor) {
    // One grid for the whole tensor: fit it on all values first.
    std::vector<float> all(t.rows * t.cols);
    convert_to_f32(src.data(), dtype, all.data(), all.size());
    if (const size_t bad = first_non_finite(all.data(), all.size()); bad != kNoBadValue)
      throw_non_finite(t, bad, all[bad]);
    tensor_grid = rtn_fit_tensor(f, all.data(), all.size());
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
    convert_to_f32(src.data() + r0 * t.cols * esize, dtype, x.data(), n);
    if (const size_t b = first_non_finite(x.data(), n); b != kNoBadValue) {
      bad[c] = r0 * t.cols + b;
      return;
    }
    uint8_t* dst = out.bytes.data() + r0 * row_bytes;
    rtn_quantize_rows(f, x.data(), nr, t.cols, t.importance ? t.importance->data() : nullptr,
                      tensor_grid ? &*tensor_grid : nullptr, dst);
    for (size_t r = 0; r < nr; ++r) f.dequantize_row(dst + r * row_bytes, y.data() + r * t.cols, t.cols);
    stats[c].add(x.data(), y.data(), n);
    const size_t finished = done.fetch_add(1) + 1;
    if (w == 0 && progress) progress(static_cast<double>(finished) / static_cast<double>(chunks));
  });

  for (size_t c = 0; c < chunks; ++c) {
    if (bad[c] != kNoBadValue) {
      float v;
      convert_to_f32(src.data() + bad[c] * esize, dtype, &v, 1);
      throw_non_finite(t, bad[c], v);
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
  writer.write_header(out);
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const TensorPlan& t = plan.tensors[i];
    if (progress) progress->begin_tensor(i, plan.tensors.size(), t);
    const auto ts = Clock::now();
    QuantizedTensor q = quantize_tensor(t, report.threads, [&](double frac) {
      if (progress) progress->advance(frac);
    });
    writer.write_tensor_data(out, q.bytes);
    TensorReport& tr = report.tensors[i];
    tr.error = q.error;
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
