// The storage-format interface. Methods (RTN, GPTQ, AWQ) decide values; a Format decides how values are stored.
//
// A Format stores a row of weights (ne[0] consecutive values) as a sequence of blocks; each block holds
// block_size() values in block_bytes() bytes and carries its own grid (scales, mins, zero points).
// Two ways in:
//  - quantize_row(): the format's own round-to-nearest for whole rows (the fast path RTN uses);
//  - fit() / quantize_value() / dequantize_value() / encode(): the same quantizer taken apart, so that a method with
//    error feedback (GPTQ) can fix the grid of a block from the weights it has when it reaches the block, round one
//    column at a time on that fixed grid, and store the codes at the end. For every format, quantize_row(x) equals
//    fit(x) + quantize_value() for each value + encode() (a tested property).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qz/io/ggml_types.hpp"

namespace qz {

// The grid one block was fitted to. Opaque to methods: each format keeps the parameters it needs to round, to
// dequantize exactly as its decoder will, and to encode.
struct BlockGrid {
  std::array<float, 64> f{};
  std::array<int32_t, 48> i{};
  // Codes the format's own search chose, for the positions its grid leaves undecided (a K-quant sub-block whose
  // quantized scale is zero keeps the search's codes, as llama.cpp does).
  std::array<uint8_t, 256> search_codes{};
};

// Where a grid is fitted: on each block, or once on the whole tensor (per-tensor integer grids).
enum class GridScope { Block, Tensor };

// One GGUF tensor of a stored weight: the main one (empty suffix) and, for some formats, side tensors named
// `<name><suffix>` (NF4's absmax values).
struct StoredPart {
  std::string suffix;
  std::vector<uint64_t> ne;  // GGUF ne of the stored tensor
  GgmlType type;
  uint64_t bytes = 0;
};

class Format {
 public:
  virtual ~Format() = default;

  virtual const std::string& name() const = 0;
  // The ggml type the tensor is stored as in GGUF: the format's own type when llama.cpp has it, I8 for the
  // project's documented custom layouts (docs/formats.md).
  virtual GgmlType storage_type() const = 0;
  // True when llama.cpp loads and computes with the stored tensor directly.
  virtual bool llama_native() const = 0;
  // False for plain float formats (F32, F16, BF16).
  virtual bool is_quantized() const { return true; }
  virtual size_t block_size() const = 0;   // values per block along a row
  virtual size_t block_bytes() const = 0;  // bytes per block
  virtual GridScope scope() const { return GridScope::Block; }
  // Nominal bits per weight (the exact figure of a whole-tensor format depends on the tensor's size).
  virtual double bits_per_weight() const {
    return 8.0 * static_cast<double>(block_bytes()) / static_cast<double>(block_size());
  }
  bool supports_row_length(size_t n) const { return n > 0 && n % block_size() == 0; }
  size_t row_bytes(size_t n) const { return n / block_size() * block_bytes(); }

  // How a tensor of logical GGUF shape `ne` (ne[0] = row length) is stored: the main tensor first. Default: one
  // tensor of rows * row_bytes bytes, with ne[0] counted in bytes for the project's I8 custom layouts.
  virtual std::vector<StoredPart> stored_parts(const std::vector<uint64_t>& ne) const;
  uint64_t stored_bytes(const std::vector<uint64_t>& ne) const;

  // Whole-tensor formats (bitsandbytes NF4/FP4: blocks run over the flattened tensor, across rows, and double
  // quantization couples blocks) have no row quantizer; they quantize and decode a whole tensor at once into
  // and from their stored_parts(), in order. The row methods of such a format throw std::logic_error.
  virtual bool whole_tensor() const { return false; }
  virtual std::vector<std::vector<uint8_t>> quantize_tensor(const float* x, size_t count) const;
  // Decodes `count` values from the stored parts; the default decodes rows of the main part.
  // Throws std::invalid_argument when a part's size does not match.
  virtual void dequantize_tensor(const std::vector<std::span<const uint8_t>>& parts, size_t count, size_t row_length,
                                 float* y) const;

  // Round-to-nearest of one row of n values (n a multiple of block_size()) into n / block_size() blocks.
  // `importance` (per-column weights, length n) may be null; formats without a weighted search ignore it.
  // The default runs fit / quantize_value / encode block by block; formats override it with a faster equivalent.
  virtual void quantize_row(const float* x, uint8_t* dst, size_t n, const float* importance) const;
  virtual void dequantize_row(const uint8_t* src, float* y, size_t n) const = 0;

  // Fits the grid of one block to values x[0..n) (n = block_size(), or every value of the tensor for
  // GridScope::Tensor). `weights` are the per-value weights of the format's weighted search (search_weights());
  // null selects the format's unweighted reference quantizer.
  virtual void fit(const float* x, size_t n, const float* weights, BlockGrid& g) const = 0;
  // The per-value weights a weighted search uses for one row, from per-column importance (an imatrix):
  // llama.cpp's imatrix[j] * sqrt(sigma2 + x[j]^2) with the format's sigma2. Default: the importance itself.
  virtual void search_weights(const float* x, size_t n, const float* importance, float* weights) const;
  // The code of value x at position j (0 <= j < block_size()) of a block with grid g: the nearest representable
  // value (clamped to the grid's range).
  virtual int32_t quantize_value(const BlockGrid& g, size_t j, float x) const = 0;
  // The value a decoder reads back for `code` at position j: exactly what dequantize_row() gives.
  virtual float dequantize_value(const BlockGrid& g, size_t j, int32_t code) const = 0;
  // Stores one block from its grid and block_size() codes.
  virtual void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const = 0;
  // For positions j0 + k (k < n) of one block: the values of codes[k], codes[k] + 1 and codes[k] - 1, the last two
  // NaN where the block does not store that code (quantize_value does not give it back). GPTQ's refinement asks
  // this of every value. The default calls dequantize_value / quantize_value; the final formats run the same calls
  // inlined (code_neighbours_inline below), with the same results.
  virtual void code_neighbours(const BlockGrid& g, size_t j0, size_t n, const int32_t* codes, float* value, float* up,
                               float* down) const;

  // Blocks whose values are linear in a few continuous parameters for fixed codes, value_j = sum_k p_k *
  // basis_k(code_j) (Q4_0/Q5_0: the scale; Q4_1/Q5_1: the scale and the min), so that a method can refit them by
  // least squares (GPTQ's refinement). 0 (the default): the format offers no such refit.
  virtual size_t linear_params() const { return 0; }
  // basis[0..linear_params()) of `code` at position j, and the grid's current parameters p.
  virtual void linear_basis(const BlockGrid&, size_t, int32_t, double*) const {}
  virtual void linear_params_of(const BlockGrid&, double*) const {}
  // Sets the parameters as the block stores them (rounded to fp16), so that dequantize_value and encode use them;
  // `p` is updated to the stored values.
  virtual void set_linear_params(BlockGrid&, double*) const {}
};

using FormatPtr = std::shared_ptr<const Format>;

// Format::code_neighbours given the block's dequantize(j, code) and quantize(j, value).
template <class Dequantize, class Quantize>
void code_neighbours_with(const Dequantize& dequantize, const Quantize& quantize, size_t j0, size_t n,
                          const int32_t* codes, float* value, float* up, float* down) {
  const float none = std::numeric_limits<float>::quiet_NaN();
  for (size_t k = 0; k < n; ++k) {
    const size_t j = j0 + k;
    const int32_t c = codes[k];
    value[k] = dequantize(j, c);
    const float vu = dequantize(j, c + 1);
    up[k] = quantize(j, vu) == c + 1 ? vu : none;
    const float vd = dequantize(j, c - 1);
    down[k] = quantize(j, vd) == c - 1 ? vd : none;
  }
}

// Format::code_neighbours with Self's own (non-virtual) dequantize_value / quantize_value.
template <class Self>
void code_neighbours_inline(const Self& self, const BlockGrid& g, size_t j0, size_t n, const int32_t* codes,
                            float* value, float* up, float* down) {
  code_neighbours_with([&](size_t j, int32_t c) { return self.Self::dequantize_value(g, j, c); },
                       [&](size_t j, float x) { return self.Self::quantize_value(g, j, x); }, j0, n, codes, value, up,
                       down);
}

}  // namespace qz
