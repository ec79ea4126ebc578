#include "qz/pipeline/tensor_source.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>

#include "qz/core/finite.hpp"
#include "qz/core/parallel.hpp"
#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/io/mapped_file.hpp"

namespace qz {

namespace {

// Rows [r0, r0 + nr) in output order (after llama.cpp's row permutation, if any), as float.
void read_rows_raw(const TensorSource& t, size_t r0, size_t nr, float* out) {
  if (t.generated) {
    std::copy_n(t.generated->data() + r0 * t.cols, nr * t.cols, out);
    return;
  }
  if (t.bnb4) {
    for (size_t r = 0; r < nr; ++r) t.bnb4->dequantize_row(t.row_order.empty() ? r0 + r : t.row_order[r0 + r], out + r * t.cols);
    return;
  }
  if (t.packed) {
    for (size_t r = 0; r < nr; ++r) t.packed->dequantize_row(t.row_order.empty() ? r0 + r : t.row_order[r0 + r], out + r * t.cols);
    return;
  }
  const auto src = t.source->bytes();
  if (const auto type = t.source->tensor->ggml_type) {  // a quantized GGUF tensor (--allow-requantize): its blocks
    const FormatPtr f = format_for_ggml_type(*type);
    const size_t rb = f->row_bytes(t.cols);
    for (size_t r = 0; r < nr; ++r) {
      const size_t src_row = t.row_order.empty() ? r0 + r : t.row_order[r0 + r];
      f->dequantize_row(src.data() + src_row * rb, out + r * t.cols, t.cols);
    }
    return;
  }
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

std::vector<uint64_t> TensorSource::logical_ne() const {
  std::vector<uint64_t> ne(shape.rbegin(), shape.rend());
  if (ne.empty()) ne.push_back(1);
  return ne;
}

void read_rows(const TensorSource& t, size_t r0, size_t nr, float* out) {
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

std::vector<float> read_finite_tensor(const TensorSource& t, unsigned threads) {
  constexpr size_t kPieces = 16;  // row ranges over threads
  std::vector<float> v(t.rows * t.cols);
  if (threads <= 1 || t.rows < kPieces) {
    read_rows(t, 0, t.rows, v.data());
  } else {
    parallel_for(kPieces, threads, [&](size_t p, unsigned) {
      const size_t r0 = t.rows * p / kPieces, r1 = t.rows * (p + 1) / kPieces;
      read_rows(t, r0, r1 - r0, v.data() + r0 * t.cols);
    });
  }
  if (const size_t bad = first_non_finite(v.data(), v.size(), threads); bad != SIZE_MAX) throw_non_finite(t, bad, v[bad]);
  return v;
}

void throw_non_finite(const TensorSource& t, size_t out_index, float value) {
  size_t index = out_index;
  if (!t.row_order.empty()) {
    index = t.rows == 1 ? t.row_order[out_index]
                        : static_cast<size_t>(t.row_order[out_index / t.cols]) * t.cols + out_index % t.cols;
  }
  throw InputError(fmt::format("{}: tensor '{}': element {} (row {}, column {}) is {}; weights must be finite",
                               t.source ? t.source->file->path().string() : std::string("(generated)"), t.name, index, index / t.cols, index % t.cols,
                               std::isnan(value) ? "NaN" : (value > 0 ? "+Inf" : "-Inf")));
}

void release_source_pages(const TensorSource& t) noexcept {
  if (t.packed) {
    for (const Checkpoint::Entry* e : {t.packed->qweight, t.packed->qzeros, t.packed->scales, t.packed->g_idx})
      if (e) release_mapped_pages(e->bytes());
  } else if (t.bnb4) {
    for (const Checkpoint::Entry* e : t.bnb4->parts()) release_mapped_pages(e->bytes());
  } else if (t.source) {
    release_mapped_pages(t.source->bytes());
  }
}

}  // namespace qz
