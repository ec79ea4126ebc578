#include "qz/core/half.hpp"

#include <vector>

namespace qz {

const float* fp16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = fp16_to_fp32_compute(static_cast<uint16_t>(i));
    return t;
  }();
  return table.data();
}

}  // namespace qz
