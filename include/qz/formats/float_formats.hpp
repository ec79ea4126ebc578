// Plain float storage: F32 (4 bytes), F16 (IEEE binary16, round to nearest even), BF16 (bfloat16, round to
// nearest even). One value per "block"; the code of a value is its bit pattern.
#pragma once

#include "qz/formats/format.hpp"

namespace qz {

FormatPtr make_f32_format();
FormatPtr make_f16_format();
FormatPtr make_bf16_format();

}  // namespace qz
