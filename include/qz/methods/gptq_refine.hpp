// GPTQ's refinement (this tool's addition to the reference algorithm). GPTQ's column-by-column pass is greedy: each
// column is rounded once, its error pushed onto the columns after it, and never revisited. Afterwards the layer's
// own objective, (w - q)^T H (w - q) per row (the output error on the calibration inputs, H = 2/N sum x x^T), can
// still be lowered, and each round of the refinement does so for every row:
//  1. coordinate descent on the codes: a value moves one grid step up or down when that lowers the objective (the
//     exact change is 2 t g_j + t^2 H_jj for a change t of the error, with g = H (w - q)), sweeping the columns
//     until none moves (at most kCodeSweeps sweeps). A code is tried only if the format stores it (quantize_value
//     maps its value back to it), so any format works;
//  2. for formats whose blocks are linear in their parameters (Format::linear_params: Q4_0/Q5_0's scale, Q4_1/
//     Q5_1's scale and min), all the row's block parameters refitted jointly by least squares for the fixed codes,
//     rounded to fp16 as stored, and kept only if the objective is then lower (rows of up to kRefitMaxCols
//     columns).
// Each step only lowers the objective, so the result is never worse than GPTQ's own on the calibration inputs.
// Rows are independent: the same bits for any thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qz/formats/format.hpp"

namespace qz {

inline constexpr int kCodeSweeps = 4;
// The joint refit costs cols^2 per row and reads all of H for each row; it runs on rows of up to this many columns
// (beyond, only the codes are refined).
inline constexpr size_t kRefitMaxCols = 1024;

// Buffers gptq_refine_rows reuses from one call to the next when given one (a thread's chunks of rows): no fresh
// pages each time.
struct RefineScratch {
  std::vector<float> q, e, g, up, down;
};

// Refines `rows` rows of `cols` columns in place: their codes (rows x cols, by column) and grids (rows x
// cols / block, for GridScope::Block formats). w0 holds the rows' original weights (rows x cols, dead columns
// zeroed); H is the undamped Hessian in float (cols x cols, symmetric). Returns the summed objective decrease.
// The descent starts from G = E H, E = w0 - Q: computed here (one sgemm) unless the caller has E (H + shift I)
// (rows x cols, as GPTQ's pass gives it through its factor), passed as eh_shifted.
double gptq_refine_rows(const Format& f, const float* w0, size_t rows, size_t cols, const float* H,
                        const std::vector<bool>& dead, int rounds, BlockGrid* grids, int32_t* codes,
                        const float* eh_shifted = nullptr, double shift = 0.0, RefineScratch* scratch = nullptr);

}  // namespace qz
