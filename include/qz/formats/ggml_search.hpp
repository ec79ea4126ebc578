// llama.cpp's scale searches, reproduced operation for operation (ggml-quants.c) so that our blocks are bit-identical
// to llama-quantize's. Compiled with -ffp-contract=off. Each search also reports the rounding parameters that
// produced its codes, so a block's grid can round further values exactly as the search did.
#pragma once

#include <cstdint>
#include <cstring>

namespace qz::ggml {

inline constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, by the 1.5 * 2^23 magic-number trick ggml uses (valid for |f| <= 4194303).
inline int nearest_int(float f) {
  const float v = f + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// Symmetric weighted search (make_qx_quants, rmse_type 1; weights null means x^2): codes L in [0, 2*nmax) with value
// (L - nmax) * scale. Returns the scale; `iscale` receives the multiplier whose rounding produced L
// (L = nmax + clamp(nearest_int(iscale * x), -nmax, nmax - 1)), `all_zero` whether the block was all zeros (L = 0).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* weights, float* iscale, bool* all_zero);

// Asymmetric weighted search (make_qkx3_quants with weights, squared error): codes L in [0, nmax] with value
// L * scale - the_min. Returns the scale and sets *the_min (>= 0). `iscale`/`min_used` receive the parameters that
// produced L (L = v > 0 ? nearest_int(min(v, nmax)) : 0 with v = iscale * (x - min_used)); `degenerate` is set
// when max <= min (L = 0).
float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, float rmin,
                       float rdelta, int nstep, float* iscale, float* min_used, bool* degenerate);

// Asymmetric search of the K-quant reference paths (make_qkx2_quants): codes L in [0, nmax], value L * scale - min.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, float rmin,
                       float rdelta, int nstep, bool use_mad);

// Symmetric search of Q3_K's reference path (make_q3_quants with do_rmse): L in [0, 2*nmax).
float make_q3_quants(int n, int nmax, const float* x, int8_t* L);
// make_q3_quants on `lanes` (8 or 16) sub-blocks of n <= 32 values at once, bit-identical, dispatched like
// search_qkx_lanes: x and L hold lane k's values at [k * n, (k + 1) * n), scale[k] receives lane k's scale.
void make_q3_quants_lanes(int lanes, int n, int nmax, const float* x, int8_t* L, float* scale);

// The same search (make_qkx2_quants when `use_mad` or without iscale/min_used needs, make_qkx3_quants otherwise) on
// `lanes` independent sub-blocks at once: x, weights and L hold lane k's n values at [k * n, (k + 1) * n); the_min,
// scale (returned per lane), iscale, min_used and degenerate hold one value per lane. Every lane performs exactly the
// scalar search's float operations in the same order, so the results are bit-identical to it (the scalar search is a
// chain of dependent additions; 8 lanes in one AVX2 vector run ~4x faster than llama.cpp). On x86-64 with AVX2 (checked
// at run time) the lanes are 8-float vectors; elsewhere the scalar search runs lane by lane. lanes is 8 or 16, n at
// most 32.
void search_qkx_lanes(int lanes, int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                      float* scale, float rmin, float rdelta, int nstep, bool use_mad, float* iscale = nullptr,
                      float* min_used = nullptr, bool* degenerate = nullptr);

// make_qx_quants on `lanes` (8 or 16) sub-blocks of n <= 32 values at once, bit-identical, dispatched like
// search_qkx_lanes: x, L (and weights, if not null) hold lane k's values at [k * n, (k + 1) * n); scale, iscale and
// all_zero one value per lane.
void make_qx_quants_lanes(int lanes, int n, int nmax, const float* x, int8_t* L, const float* weights, float* scale,
                          float* iscale, bool* all_zero);

// Quantizes positive sub-block scales (or mins) to integers 0..nmax under weights (make_qp_quants); returns the
// super-block scale.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* weights);

}  // namespace qz::ggml
