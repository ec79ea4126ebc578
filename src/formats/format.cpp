#include "qz/formats/format.hpp"

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace qz {

void Format::code_neighbours(const BlockGrid& g, size_t j0, size_t n, const int32_t* codes, float* value, float* up,
                             float* down) const {
  code_neighbours_with([&](size_t j, int32_t c) { return dequantize_value(g, j, c); },
                       [&](size_t j, float x) { return quantize_value(g, j, x); }, j0, n, codes, value, up, down);
}

void Format::search_weights(const float*, size_t n, const float* importance, float* weights) const {
  std::copy(importance, importance + n, weights);
}

void Format::quantize_row(const float* x, uint8_t* dst, size_t n, const float* importance) const {
  const size_t bs = block_size();
  std::vector<int32_t> codes(bs);
  std::vector<float> weights;
  if (importance != nullptr) {
    weights.resize(n);
    search_weights(x, n, importance, weights.data());
  }
  BlockGrid g;
  for (size_t b = 0; b < n / bs; ++b) {
    const float* xb = x + b * bs;
    fit(xb, bs, importance ? weights.data() + b * bs : nullptr, g);
    for (size_t j = 0; j < bs; ++j) codes[j] = quantize_value(g, j, xb[j]);
    encode(g, codes.data(), dst + b * block_bytes());
  }
}

std::vector<StoredPart> Format::stored_parts(const std::vector<uint64_t>& ne) const {
  StoredPart p{"", ne, storage_type(), 0};
  uint64_t rows = 1;
  for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
  p.bytes = rows * row_bytes(ne[0]);
  if (storage_type() == GgmlType::I8 && is_quantized()) p.ne[0] = row_bytes(ne[0]);
  return {p};
}

uint64_t Format::stored_bytes(const std::vector<uint64_t>& ne) const {
  uint64_t n = 0;
  for (const auto& p : stored_parts(ne)) n += p.bytes;
  return n;
}

std::vector<std::vector<uint8_t>> Format::quantize_tensor(const float*, size_t) const {
  throw std::logic_error(name() + " stores rows: quantize it with quantize_row");
}

void Format::dequantize_tensor(const std::vector<std::span<const uint8_t>>& parts, size_t count, size_t row_length,
                               float* y) const {
  const size_t rows = row_length ? count / row_length : 0, rb = row_bytes(row_length);
  if (parts.size() != 1 || parts[0].size() != rows * rb)
    throw std::invalid_argument(name() + ": stored bytes do not match the shape");
  for (size_t r = 0; r < rows; ++r) dequantize_row(parts[0].data() + r * rb, y + r * row_length, row_length);
}

}  // namespace qz
