#include "qz/formats/format.hpp"

#include <algorithm>
#include <vector>

namespace qz {

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

}  // namespace qz
