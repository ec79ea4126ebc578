// bitsandbytes' block-wise 4-bit types, exactly as bitsandbytes stores them (QLoRA, Dettmers et al. 2023).
//
// The tensor is flattened row-major and cut into blocks of `blocksize` values (64 by default, 32..4096; the last
// block may be partial, and blocks may span rows). Per block: absmax = max|x| (fp32); every value is divided by it,
// clamped to [-1, 1] and replaced by the index of the nearest code value (torch.bucketize against the 15 midpoints
// of the sorted code: a value on a midpoint takes the lower code). Codes are packed two per byte, the first value
// of each pair in the HIGH nibble: byte k = q[2k] << 4 | q[2k+1] (a final odd value leaves the low nibble 0).
// Decoding: x = code[q] * absmax.
//
// Double quantization (on by default): offset = mean of all absmax values; the centered absmax values are quantized
// in blocks of 256 with bitsandbytes' signed 8-bit dynamic map (absmax of each such block = nested_absmax, fp32; code
// index by bucketize on the map's midpoints) and stored as uint8. absmax = map[q] * nested_absmax + offset.
// Bits per weight: 4 + 8/blocksize + 32/(blocksize*256) (4.127 for 64), or 4 + 32/blocksize without it.
#pragma once

#include <array>
#include <memory>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qz {

// bitsandbytes' get_4bit_type("nf4"): the published 16 NormalFloat values, index order = value order.
const std::array<float, 16>& nf4_code();
// bitsandbytes' get_4bit_type("fp4"): E2M1 bit patterns (sign, 2 exponent, 1 mantissa bits) / 12.
const std::array<float, 16>& fp4_code();
// create_normal_map(offset, use_extra_value=True): 8 positive quantiles Phi^-1(linspace(offset, 0.5, 9)[:-1]),
// 7 negative ones -Phi^-1(linspace(offset, 0.5, 8)[:-1]) and 0, sorted and divided by the largest, in float32.
std::array<float, 16> construct_nf4_code(float offset = 0.9677083f);
// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 256 values in [-1, 1], sorted.
const std::array<float, 256>& dynamic_map();
// The standard normal quantile function Phi^-1(p), to double precision.
double normal_quantile(double p);
// torch.linspace(start, end, steps) in float32, as PyTorch computes it on the CPU.
std::vector<float> torch_linspace(float start, float end, int steps);

struct Nf4Options {
  size_t blocksize = 64;
  bool double_quant = true;
  bool fp4 = false;  // FP4 (E2M1) instead of NF4
  static constexpr size_t kNestedBlock = 256;
  std::string name() const;  // "nf4_b64_dq", "fp4_b128", ...
};

struct Nf4Tensor {
  size_t count = 0;                  // values
  std::vector<uint8_t> packed;       // ceil(count / 2) bytes
  std::vector<float> absmax;         // per block, without double quantization
  std::vector<uint8_t> qabsmax;      // per block, with double quantization
  std::vector<float> nested_absmax;  // per 256 blocks, with double quantization
  float nested_offset = 0.0f;
};

size_t nf4_blocks(size_t count, const Nf4Options& o);
double nf4_bits_per_weight(size_t count, const Nf4Options& o);
// Throws UsageError for a block size outside 32..4096 or not a power of two.
void validate_nf4_options(const Nf4Options& o);

Nf4Tensor quantize_nf4(const float* x, size_t count, const Nf4Options& o);
// Parses "nf4_b64_dq", "fp4_b128", ...; false if `name` is not such a name.
bool parse_nf4_name(const std::string& name, Nf4Options* o);
// NF4/FP4 as a whole-tensor Format of the table (format.hpp): its stored parts are the packed codes
// (`<name>`, I8 [ceil(n/2)]) and the absmax values: `<name>.absmax` F32 [blocks], or with double quantization
// `<name>.absmax` I8 [blocks], `<name>.nested_absmax` F32 [ceil(blocks/256)], `<name>.nested_offset` F32 [1].
class Format;
std::shared_ptr<const Format> make_nf4_format(const Nf4Options& o);

// The per-block absmax values a decoder uses (after undoing double quantization).
std::vector<float> nf4_absmax(const Nf4Tensor& t, const Nf4Options& o);
void dequantize_nf4(const Nf4Tensor& t, const Nf4Options& o, float* y);

}  // namespace qz
