#include "qz/methods/rtn.hpp"

#include <stdexcept>
#include <vector>

namespace qz {

BlockGrid rtn_fit_tensor(const Format& f, const float* x, size_t n) {
  BlockGrid g;
  f.fit(x, n, nullptr, g);
  return g;
}

void rtn_quantize_rows(const Format& f, const float* x, size_t rows, size_t cols, const float* importance,
                       const BlockGrid* tensor_grid, uint8_t* dst) {
  const size_t row_bytes = f.row_bytes(cols);
  if (f.scope() == GridScope::Block) {
    for (size_t r = 0; r < rows; ++r) f.quantize_row(x + r * cols, dst + r * row_bytes, cols, importance);
    return;
  }
  if (tensor_grid == nullptr) throw std::logic_error("rtn_quantize_rows: per-tensor grid missing");
  std::vector<int32_t> codes(cols);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t j = 0; j < cols; ++j) codes[j] = f.quantize_value(*tensor_grid, j, x[r * cols + j]);
    f.encode(*tensor_grid, codes.data(), dst + r * row_bytes);
  }
}

}  // namespace qz
