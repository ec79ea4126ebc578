// Where a planned tensor's values come from: its checkpoint entry, llama.cpp's row order and AWQ's folded
// transform. read_rows() gives the values exactly as they will be quantized; both the AWQ searches and the
// quantizer read through it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qz/io/checkpoint.hpp"
#include "qz/model/packed_linear.hpp"

namespace qz {

// AWQ's folding, applied while a tensor is read (pipeline/awq_pass.hpp): weight columns times col_mul (the group's
// scales), rows divided by row_div (indexed by checkpoint row: the next group's scales, for v_proj and up_proj),
// 1-D tensors divided by col_div (norm weights, v's bias), then each (output row, group of clip_group columns)
// clamped to +-clip.
struct TensorTransform {
  std::vector<float> col_mul, row_div, col_div, clip;
  size_t clip_group = 0;
};

struct TensorSource {
  const Checkpoint::Entry* source = nullptr;    // null for a tensor the conversion makes (`generated`)
  std::shared_ptr<const std::vector<float>> generated;  // its values (e.g. llama3's rope_freqs.weight)
  std::string name;             // name in the output file
  std::vector<uint64_t> shape;  // source shape, outermost first
  size_t rows = 0;              // product of all but the last dimension
  size_t cols = 0;              // row length (GGUF ne[0])
  std::vector<uint32_t> row_order;             // source row of each output row (llama.cpp's q/k permutation)
  std::shared_ptr<TensorTransform> transform;  // AWQ scaling and clipping, if any
  // A linear of a GPTQ / AWQ checkpoint (model/packed_linear.hpp): its values are decoded from the packed codes;
  // with carry_codes the codes themselves are stored (the target type holds its grid exactly).
  std::shared_ptr<const PackedLinear> packed;
  bool carry_codes = false;
  std::shared_ptr<const Bnb4Linear> bnb4;  // a bitsandbytes 4-bit linear: its values are decoded from its blocks
  const std::string& source_name() const {
    return packed ? packed_weight_name_ : source ? source->tensor->name : name;
  }
  void set_packed(std::shared_ptr<const PackedLinear> p) {
    packed = std::move(p);
    packed_weight_name_ = packed->base + ".weight";
  }
  std::vector<uint64_t> logical_ne() const;  // GGUF ne: the shape innermost first

 private:
  std::string packed_weight_name_;
};

// Rows [r0, r0 + nr) as the output stores them: converted to float, in output row order, transform applied.
void read_rows(const TensorSource& t, size_t r0, size_t nr, float* out);
// Done reading the tensor: the pages of its bytes in the input mappings (the entry, or a packed linear's parts)
// leave the resident set, so that memory stays flat over a whole model (io/mapped_file.hpp).
void release_source_pages(const TensorSource& t) noexcept;
// The whole tensor (row ranges read over `threads`); throws InputError naming the file, tensor and element of a
// NaN/Inf value.
std::vector<float> read_finite_tensor(const TensorSource& t, unsigned threads = 1);

// The InputError for a NaN/Inf at output element `out_index` (reported where the checkpoint has it).
[[noreturn]] void throw_non_finite(const TensorSource& t, size_t out_index, float value);

}  // namespace qz
