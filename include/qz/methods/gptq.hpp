// GPTQ (Frantar et al., 2022): quantize a linear layer's weight W [rows, cols] column by column, each rounding
// error spread over the columns not yet quantized through the inverse Hessian of the layer's inputs, so that
// ||X W^T - X Q^T|| stays small. The rounding grid comes from any Format (fit / quantize_value), which is how
// GPTQ reaches llama.cpp's block formats and K-quants as well as integer grids.
//
// Reference algorithm (IST-DASLab/gptq): dead columns (H_ii = 0) get H_ii = 1 and a zero weight column;
// H += damp * mean(diag H) * I; U = upper Cholesky factor of H^-1; for each column i: q = round(w_i),
// err = (w_i - q) / U_ii, the remaining columns of the lazy block get -err * U[i, i+1:], and after each block one
// matrix product updates every later column. Loss = sum (w - q)^2 / U_ii^2 / 2.
// Groups: a block's grid is fitted when the loop reaches its first column, on the error-updated weights. With
// act_order (columns by decreasing diag H), grids are fitted up front on the original weights ("static groups"),
// since GGUF blocks have no column index. With weighted_fit the grids come from the format's importance-weighted
// search with diag(H) (the imatrix statistic of these inputs) as the importance.
#pragma once

#include <Eigen/Dense>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "qz/formats/format.hpp"

namespace qz {

struct GptqConfig {
  double damp = 0.01;       // fraction of mean(diag H) added to the diagonal (raised step by step if needed)
  size_t block_size = 128;  // lazy-batch width (rounded up to a multiple of the format's block)
  bool act_order = false;   // process columns by decreasing diag(H), with static groups
  bool static_groups = false;  // fit every grid up front on the original weights (always so with act_order)
  bool weighted_fit = false;   // fit each block's grid weighting its values by diag(H), as llama.cpp weights by an
                               // imatrix (the format's own importance-weighted search)
  int refine_rounds = 2;       // rounds of the refinement after the pass (methods/gptq_refine.hpp); 0: none
};

struct GptqStats {
  double loss = 0.0;         // sum over rows and columns of (w - q)^2 / U_ii^2 / 2
  double damp = 0.0;         // the damping fraction that made H positive definite
  int damp_attempts = 0;     // Cholesky attempts made
  size_t dead_columns = 0;   // columns whose inputs were always zero
  double factor_seconds = 0.0;  // damping, Cholesky and inverse
  double update_seconds = 0.0;  // the column loop and the lazy-batch products
  double refine_seconds = 0.0;  // the refinement
  double refine_gain = 0.0;     // how much the refinement lowered the summed objective (w - q)^T H (w - q)
};

// Quantizes w (rows x cols, row-major) into rows * f.row_bytes(cols) bytes at dst. H is the cols x cols Hessian
// (2/N sum x x^T). Rows are processed in fixed chunks over `threads`, so the result is the same for any count.
// Throws std::runtime_error if no damping makes H positive definite. With h_float, H in float (cols x cols) is left
// there for the caller (the refinement makes that copy anyway).
GptqStats gptq_quantize(const Format& f, const float* w, size_t rows, size_t cols, const Eigen::MatrixXd& H,
                        const GptqConfig& cfg, unsigned threads, uint8_t* dst,
                        std::shared_ptr<const float>* h_float = nullptr);

}  // namespace qz
