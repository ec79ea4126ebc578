// Compiled with -ffp-contract=off: the float operations and their order follow ggml-quants.c exactly.
#include "qz/formats/ggml_search.hpp"

#include "qz/core/cpu_features.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <stdexcept>

namespace qz::ggml {

float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* weights, float* iscale_out,
                     bool* all_zero) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  *all_zero = false;
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *all_zero = true;
    *iscale_out = 0.0f;
    return 0.0f;
  }
  float iscale = static_cast<float>(-nmax) / max;
  *iscale_out = iscale;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weights ? weights[i] : x[i] * x[i];
    const auto fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const auto fl = static_cast<float>(std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      const float w = weights ? weights[i] : x[i] * x[i];
      sumlx += w * x[i] * fl;
      suml2 += w * fl * fl;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
      *iscale_out = iscale;
    }
  }
  return scale;
}

namespace {

// The asymmetric weighted search shared by make_qkx2_quants (K-quant reference paths, optionally absolute error)
// and make_qkx3_quants (imatrix paths). The two ggml functions differ only in forms that agree for finite inputs
// (max == min vs max <= min after min <= 0; clamp(round(v)) vs round(min(v, nmax)) for v > 0), which the golden
// vectors confirm.
float search_qkx(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, float rmin,
                 float rdelta, int nstep, bool use_mad, float* iscale_out, float* min_used, bool* degenerate) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  *degenerate = false;
  if (max <= min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    *degenerate = true;
    *iscale_out = 0.0f;
    *min_used = min;
    return 0.0f;
  }
  const auto fnmax = static_cast<float>(nmax);
  float iscale = fnmax / (max - min);
  float scale = 1 / iscale;
  *iscale_out = iscale;
  *min_used = min;
  float best_mad = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::clamp(l, 0, nmax));
    float diff = scale * static_cast<float>(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_mad += weights[i] * diff;
  }
  uint8_t Laux[256];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + fnmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const float v = iscale * (x[i] - min);
      const int l = v > 0 ? nearest_int(std::min(v, fnmax)) : 0;
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      const auto fl = static_cast<float>(l);
      sum_l += w * fl;
      sum_l2 += w * fl * fl;
      sum_xl += w * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float mad = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        mad += weights[i] * diff;
      }
      if (mad < best_mad) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_mad = mad;
        scale = this_scale;
        *iscale_out = iscale;
        *min_used = min;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

}  // namespace

float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, float rmin,
                       float rdelta, int nstep, float* iscale, float* min_used, bool* degenerate) {
  return search_qkx(n, nmax, x, weights, L, the_min, rmin, rdelta, nstep, false, iscale, min_used, degenerate);
}

float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, float rmin,
                       float rdelta, int nstep, bool use_mad) {
  float iscale = 0, min_used = 0;
  bool degenerate = false;
  return search_qkx(n, nmax, x, weights, L, the_min, rmin, rdelta, nstep, use_mad, &iscale, &min_used, &degenerate);
}

namespace {

// Lane-wise operations of the lane searches, as ggml's scalar code does them.
template <typename VF, typename VI>
struct LaneOps {
  // nearest_int: the 1.5 * 2^23 magic-number rounding.
  [[gnu::always_inline]] static VI nearest(VF f) { return (std::bit_cast<VI>(f + 12582912.0f) & 0x007fffff) - 0x00400000; }
  [[gnu::always_inline]] static VF to_float(VI v) { return __builtin_convertvector(v, VF); }
  [[gnu::always_inline]] static VF abs(VF v) { return std::bit_cast<VF>(std::bit_cast<VI>(v) & 0x7fffffff); }
  // m ? a : b per lane (m all ones or all zeros) by bit operations: SSE2 has no blend, and GCC splits vector ?: on it
  // into scalar moves.
  [[gnu::always_inline]] static VF select(VI m, VF a, VF b) { return std::bit_cast<VF>((std::bit_cast<VI>(a) & m) | (std::bit_cast<VI>(b) & ~m)); }
  [[gnu::always_inline]] static VI select(VI m, VI a, VI b) { return (a & m) | (b & ~m); }
};

// search_qkx on W lanes held in GCC vector types (VF: W floats, VI: W int32), one lane per sub-block. Every lane does
// the scalar search's float operations in the same order: the vector instructions are IEEE single precision like the
// scalar ones, so the results are bit-identical.
template <typename VF, typename VI, int W>
[[gnu::always_inline]] inline void search_qkx_w(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min_out,
                  float* scale_out, float rmin, float rdelta, int nstep, bool use_mad, float* iscale_out,
                  float* min_used_out, bool* degenerate_out) {
  using Ops = LaneOps<VF, VI>;
  constexpr int kMaxN = 32;
  VF xt[kMaxN] = {}, wt[kMaxN] = {};
  VI Lt[kMaxN], Laux[kMaxN];
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < W; ++k) {
      xt[i][k] = x[k * n + i];
      wt[i][k] = weights[k * n + i];
    }
  const VF zero = VF{} + 0.0f, one = zero + 1.0f, fnmax = zero + static_cast<float>(nmax);
  const VI izero = VI{} + 0, inmax = izero + nmax;

  VF mn = xt[0], mx = xt[0], sum_w = wt[0];
  VF sum_x = sum_w * xt[0];
  for (int i = 1; i < n; ++i) {
    mn = Ops::select(xt[i] < mn, xt[i], mn);
    mx = Ops::select(xt[i] > mx, xt[i], mx);
    sum_w += wt[i];
    sum_x += wt[i] * xt[i];
  }
  mn = Ops::select(mn > zero, zero, mn);
  const VI degenerate = mx <= mn;
  VF iscale = fnmax / Ops::select(degenerate, one, mx - mn);  // degenerate lanes compute harmless values, reset at the end
  VF scale = 1 / iscale;
  VF min_used = mn;
  VF best_mad = zero;
  for (int i = 0; i < n; ++i) {
    VI l = Ops::nearest(iscale * (xt[i] - mn));
    l = Ops::select(l < izero, izero, l);
    l = Ops::select(l > inmax, inmax, l);
    Lt[i] = l;
    VF diff = scale * Ops::to_float(l) + mn - xt[i];
    diff = use_mad ? Ops::abs(diff) : diff * diff;
    best_mad += wt[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    // (mx - mn) with the current mn: an accepted step moves mn, as in the scalar search.
    const VF isc = (rmin + rdelta * static_cast<float>(is) + fnmax) / Ops::select(degenerate, one, mx - mn);
    VF sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      const VF v = isc * (xt[i] - mn);
      const VF c = Ops::select(fnmax < v, fnmax, v);
      const VI l = Ops::nearest(c) & (v > zero);
      Laux[i] = l;
      const VF fl = Ops::to_float(l);
      const VF wfl = wt[i] * fl;
      sum_l += wfl;
      sum_l2 += wfl * fl;
      sum_xl += wfl * xt[i];
    }
    const VF D = sum_w * sum_l2 - sum_l * sum_l;
    const VI ok = (D > zero) & ~degenerate;  // lanes where the scalar search would evaluate this step
    const VF d = Ops::select(ok, D, one);
    VF ts = (sum_w * sum_xl - sum_x * sum_l) / d;
    VF tm = (sum_l2 * sum_x - sum_l * sum_xl) / d;
    const VI pos = tm > zero;
    ts = Ops::select(pos, sum_xl / Ops::select(ok, sum_l2, one), ts);
    tm = Ops::select(pos, zero, tm);
    VF mad = zero;
    for (int i = 0; i < n; ++i) {
      VF diff = ts * Ops::to_float(Laux[i]) + tm - xt[i];
      diff = use_mad ? Ops::abs(diff) : diff * diff;
      mad += wt[i] * diff;
    }
    const VI accept = ok & (mad < best_mad);
    best_mad = Ops::select(accept, mad, best_mad);
    scale = Ops::select(accept, ts, scale);
    iscale = Ops::select(accept, isc, iscale);
    min_used = Ops::select(accept, mn, min_used);
    mn = Ops::select(accept, tm, mn);
    for (int i = 0; i < n; ++i) Lt[i] = Ops::select(accept, Laux[i], Lt[i]);
  }
  for (int k = 0; k < W; ++k) {
    const bool deg = degenerate[k] != 0;
    the_min_out[k] = -mn[k];
    scale_out[k] = deg ? 0.0f : scale[k];
    if (iscale_out) iscale_out[k] = deg ? 0.0f : iscale[k];
    if (min_used_out) min_used_out[k] = deg ? mn[k] : min_used[k];
    if (degenerate_out) degenerate_out[k] = deg;
    for (int i = 0; i < n; ++i) L[k * n + i] = deg ? 0 : static_cast<uint8_t>(Lt[i][k]);
  }
}

// The largest |x| per lane and the signed value that has it (the first, as ggml's strict > keeps it), and the lanes
// whose largest |x| is below kGroupMaxEps, whose maximum is then set to 1 (they compute harmless values, reset at the
// end): the start of the symmetric searches.
template <typename VF, typename VI>
[[gnu::always_inline]] inline VI signed_max(const VF* xt, int n, VF& mx) {
  using Ops = LaneOps<VF, VI>;
  const VF zero = VF{} + 0.0f;
  VF amax = zero;
  mx = zero;
  for (int i = 0; i < n; ++i) {
    const VF ax = Ops::abs(xt[i]);
    const VI bigger = ax > amax;
    amax = Ops::select(bigger, ax, amax);
    mx = Ops::select(bigger, xt[i], mx);
  }
  const VI all_zero = amax < (zero + kGroupMaxEps);
  mx = Ops::select(all_zero, zero + 1.0f, mx);
  return all_zero;
}

// make_qx_quants on W lanes (one sub-block of n <= 32 values each), the same way.
template <typename VF, typename VI, int W>
[[gnu::always_inline]] inline void qx_w(int n, int nmax, const float* x, int8_t* L, const float* weights,
                                        float* scale_out, float* iscale_out, bool* all_zero_out) {
  using Ops = LaneOps<VF, VI>;
  constexpr int kMaxN = 32;
  VF xt[kMaxN] = {}, wt[kMaxN] = {};
  VI Lt[kMaxN], Laux[kMaxN];
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < W; ++k) {
      const float v = x[k * n + i];
      xt[i][k] = v;
      wt[i][k] = weights ? weights[k * n + i] : v * v;
    }
  const VF zero = VF{} + 0.0f, one = zero + 1.0f, fnmax = zero + static_cast<float>(nmax);
  const VI lo = VI{} - nmax, hi = VI{} + (nmax - 1);
  VF mx;
  const VI all_zero = signed_max<VF, VI>(xt, n, mx);
  VF iscale = (zero - fnmax) / mx;
  VF sumlx = zero, suml2 = zero;
  for (int i = 0; i < n; ++i) {
    VI l = Ops::nearest(iscale * xt[i]);
    l = Ops::select(l < lo, lo, l);
    l = Ops::select(l > hi, hi, l);
    Lt[i] = l;
    const VF fl = Ops::to_float(l);
    sumlx += wt[i] * xt[i] * fl;
    suml2 += wt[i] * fl * fl;
  }
  const VI nonzero = suml2 != zero;
  VF scale = Ops::select(nonzero, sumlx / Ops::select(nonzero, suml2, one), zero);
  VF best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const VF isc = (zero - (fnmax + 0.1f * static_cast<float>(is))) / mx;
    VF slx = zero, sl2 = zero;
    for (int i = 0; i < n; ++i) {
      VI l = Ops::nearest(isc * xt[i]);
      l = Ops::select(l < lo, lo, l);
      l = Ops::select(l > hi, hi, l);
      Laux[i] = l;
      const VF fl = Ops::to_float(l);
      slx += wt[i] * xt[i] * fl;
      sl2 += wt[i] * fl * fl;
    }
    const VI positive = sl2 > zero;
    const VI accept = positive & (slx * slx > best * sl2);
    const VF ns = slx / Ops::select(positive, sl2, one);
    scale = Ops::select(accept, ns, scale);
    best = Ops::select(accept, ns * slx, best);
    iscale = Ops::select(accept, isc, iscale);
    for (int i = 0; i < n; ++i) Lt[i] = Ops::select(accept, Laux[i], Lt[i]);
  }
  for (int k = 0; k < W; ++k) {
    const bool z = all_zero[k] != 0;
    scale_out[k] = z ? 0.0f : scale[k];
    iscale_out[k] = z ? 0.0f : iscale[k];
    all_zero_out[k] = z;
    for (int i = 0; i < n; ++i) L[k * n + i] = z ? int8_t{0} : static_cast<int8_t>(Lt[i][k] + nmax);
  }
}

// make_q3_quants on W lanes (one sub-block of n <= 32 values each): the refinement passes run in every lane while it
// still changed a code in its previous pass, exactly as the scalar loop stops once a pass changes nothing.
template <typename VF, typename VI, int W>
[[gnu::always_inline]] inline void q3_w(int n, int nmax, const float* x, int8_t* L, float* scale_out) {
  using Ops = LaneOps<VF, VI>;
  constexpr int kMaxN = 32;
  VF xt[kMaxN] = {};
  VI Lt[kMaxN];
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < W; ++k) xt[i][k] = x[k * n + i];
  const VF zero = VF{} + 0.0f, one = zero + 1.0f, fnmax = zero + static_cast<float>(nmax);
  const VI izero = VI{} + 0, lo = VI{} - nmax, hi = VI{} + (nmax - 1);
  VF mx;
  const VI all_zero = signed_max<VF, VI>(xt, n, mx);
  const VF iscale = (zero - fnmax) / mx;
  VF sumlx = zero, suml2 = zero;
  for (int i = 0; i < n; ++i) {
    VI l = Ops::nearest(iscale * xt[i]);
    l = Ops::select(l < lo, lo, l);
    l = Ops::select(l > hi, hi, l);
    Lt[i] = l;
    const VF w = xt[i] * xt[i];
    const VF fl = Ops::to_float(l);
    sumlx += w * xt[i] * fl;
    suml2 += w * fl * fl;
  }
  VI active = ~all_zero;
  for (int itry = 0; itry < 5; ++itry) {
    VI changed = izero;
    for (int i = 0; i < n; ++i) {
      const VF w = xt[i] * xt[i];
      const VF li = Ops::to_float(Lt[i]);
      VF slx = sumlx - w * xt[i] * li;
      const VI pos = active & (slx > zero);
      VF sl2 = suml2 - w * li * li;
      VI nl = Ops::nearest(xt[i] * sl2 / Ops::select(pos, slx, one));
      nl = Ops::select(nl < lo, lo, nl);
      nl = Ops::select(nl > hi, hi, nl);
      const VF fn = Ops::to_float(nl);
      slx += w * xt[i] * fn;
      sl2 += w * fn * fn;
      const VI accept = pos & (nl != Lt[i]) & (sl2 > zero) & (slx * slx * suml2 > sumlx * sumlx * sl2);
      Lt[i] = Ops::select(accept, nl, Lt[i]);
      sumlx = Ops::select(accept, slx, sumlx);
      suml2 = Ops::select(accept, sl2, suml2);
      changed |= accept;
    }
    active &= changed;
    bool any = false;
    for (int k = 0; k < W; ++k) any |= active[k] != 0;
    if (!any) break;
  }
  for (int k = 0; k < W; ++k) {
    const bool z = all_zero[k] != 0;
    scale_out[k] = z || !(suml2[k] > 0.0f) ? 0.0f : sumlx[k] / suml2[k];
    for (int i = 0; i < n; ++i) L[k * n + i] = z ? int8_t{0} : static_cast<int8_t>(Lt[i][k] + nmax);
  }
}

using VF8 = float __attribute__((vector_size(32)));
using VI8 = int32_t __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__)
#define QZ_HAVE_AVX2_LANES 1
// The 8-lane search compiled for AVX2, where the 8-float vectors and their selects are single instructions. FMA stays
// off (-ffp-contract=off), so the bits are the scalar search's. Without AVX2 (SSE2 splits the selects into scalar
// moves and was measured slower than the scalar search) the scalar search runs lane by lane.
__attribute__((target("avx2"))) void search_qkx_8_avx2(int n, int nmax, const float* x, const float* weights,
                                                       uint8_t* L, float* the_min, float* scale, float rmin,
                                                       float rdelta, int nstep, bool use_mad, float* iscale,
                                                       float* min_used, bool* degenerate) {
  search_qkx_w<VF8, VI8, 8>(n, nmax, x, weights, L, the_min, scale, rmin, rdelta, nstep, use_mad, iscale, min_used,
                            degenerate);
}

__attribute__((target("avx2"))) void qx_8_avx2(int n, int nmax, const float* x, int8_t* L, const float* weights,
                                               float* scale, float* iscale, bool* all_zero) {
  qx_w<VF8, VI8, 8>(n, nmax, x, L, weights, scale, iscale, all_zero);
}

__attribute__((target("avx2"))) void q3_8_avx2(int n, int nmax, const float* x, int8_t* L, float* scale) {
  q3_w<VF8, VI8, 8>(n, nmax, x, L, scale);
}

#endif

}  // namespace

void search_qkx_lanes(int lanes, int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                      float* scale, float rmin, float rdelta, int nstep, bool use_mad, float* iscale, float* min_used,
                      bool* degenerate) {
  if (n < 1 || n > 32) throw std::invalid_argument("search_qkx_lanes: n must be in [1, 32]");
  if (lanes != 8 && lanes != 16) throw std::invalid_argument("search_qkx_lanes: lanes must be 8 or 16");
#ifdef QZ_HAVE_AVX2_LANES
  if (cpu_has_avx2()) {
    for (int h = 0; h < lanes / 8; ++h)  // groups of 8 lanes (16-float vectors spill even with AVX2)
      search_qkx_8_avx2(n, nmax, x + 8 * h * n, weights + 8 * h * n, L + 8 * h * n, the_min + 8 * h, scale + 8 * h,
                        rmin, rdelta, nstep, use_mad, iscale ? iscale + 8 * h : nullptr,
                        min_used ? min_used + 8 * h : nullptr, degenerate ? degenerate + 8 * h : nullptr);
    return;
  }
#endif
  for (int k = 0; k < lanes; ++k) {
    float isc = 0, used = 0;
    bool deg = false;
    scale[k] = search_qkx(n, nmax, x + k * n, weights + k * n, L + k * n, &the_min[k], rmin, rdelta, nstep, use_mad,
                          &isc, &used, &deg);
    if (iscale) iscale[k] = isc;
    if (min_used) min_used[k] = used;
    if (degenerate) degenerate[k] = deg;
  }
}

void make_qx_quants_lanes(int lanes, int n, int nmax, const float* x, int8_t* L, const float* weights, float* scale,
                          float* iscale, bool* all_zero) {
  if (n < 1 || n > 32) throw std::invalid_argument("make_qx_quants_lanes: n must be in [1, 32]");
  if (lanes != 8 && lanes != 16) throw std::invalid_argument("make_qx_quants_lanes: lanes must be 8 or 16");
#ifdef QZ_HAVE_AVX2_LANES
  if (cpu_has_avx2()) {
    for (int h = 0; h < lanes / 8; ++h)
      qx_8_avx2(n, nmax, x + 8 * h * n, L + 8 * h * n, weights ? weights + 8 * h * n : nullptr, scale + 8 * h,
                iscale + 8 * h, all_zero + 8 * h);
    return;
  }
#endif
  for (int k = 0; k < lanes; ++k)
    scale[k] = make_qx_quants(n, nmax, x + k * n, L + k * n, weights ? weights + k * n : nullptr, &iscale[k], &all_zero[k]);
}

void make_q3_quants_lanes(int lanes, int n, int nmax, const float* x, int8_t* L, float* scale) {
  if (n < 1 || n > 32) throw std::invalid_argument("make_q3_quants_lanes: n must be in [1, 32]");
  if (lanes != 8 && lanes != 16) throw std::invalid_argument("make_q3_quants_lanes: lanes must be 8 or 16");
#ifdef QZ_HAVE_AVX2_LANES
  if (cpu_has_avx2()) {
    for (int h = 0; h < lanes / 8; ++h) q3_8_avx2(n, nmax, x + 8 * h * n, L + 8 * h * n, scale + 8 * h);
    return;
  }
#endif
  for (int k = 0; k < lanes; ++k) scale[k] = make_q3_quants(n, nmax, x + k * n, L + k * n);
}

float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    const auto fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      const auto li = static_cast<float>(L[i]);
      float slx = sumlx - w * x[i] * li;
      if (slx > 0) {
        float sl2 = suml2 - w * li * li;
        const int new_l = std::clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != L[i]) {
          const auto fn = static_cast<float>(new_l);
          slx += w * x[i] * fn;
          sl2 += w * fn * fn;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const auto fnmax = static_cast<float>(nmax);
  float iscale = fnmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(L[i]);
    best_mse += weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + fnmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    const float w = weights[i];
    const auto fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = weights[i];
      const auto li = static_cast<float>(L[i]);
      float slx = sumlx - w * x[i] * li;
      float sl2 = suml2 - w * li * li;
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          const auto fn = static_cast<float>(new_l);
          slx += w * x[i] * fn;
          sl2 += w * fn * fn;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

}  // namespace qz::ggml
