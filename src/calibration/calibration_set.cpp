#include "qz/calibration/calibration_set.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "qz/core/dtype.hpp"
#include "qz/core/error.hpp"
#include "qz/core/finite.hpp"
#include "qz/core/parallel.hpp"

namespace qz {

namespace fs = std::filesystem;

CalibrationSet::CalibrationSet(const std::vector<fs::path>& files) : paths_(files) {
  if (files.empty()) throw UsageError("no calibration file given");
  for (const auto& f : files) files_.push_back(std::make_unique<SafetensorsFile>(f));
}

uint64_t CalibInput::hessian_token_count() const {
  float v = 0;
  convert_to_f32(file->data(*hessian_tokens).data(), hessian_tokens->dtype, &v, 1);
  // A count a double holds exactly and a uint64_t can take (1e30 would be undefined behaviour in the cast).
  if (!(v >= 1.0f) || !(v <= 9.0e15f))
    throw InputError(fmt::format("{}: '{}' is {}: it must be a positive token count (at most 9e15)", file->path().string(),
                                 hessian_tokens->name, v));
  return static_cast<uint64_t>(v);
}

std::vector<CalibInput> CalibrationSet::inputs_of(const std::string& weight_name) const {
  std::vector<CalibInput> out;
  if (!weight_name.ends_with(".weight")) return out;
  const std::string module = weight_name.substr(0, weight_name.size() - 7);
  // The module itself first, then the siblings that read the same input.
  std::vector<std::string> candidates = {module};
  const auto dot = module.rfind('.');
  if (dot != std::string::npos) {
    const std::string parent = module.substr(0, dot + 1), leaf = module.substr(dot + 1);
    const std::vector<std::vector<std::string>> groups = {{"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"}};
    for (const auto& g : groups)
      if (std::find(g.begin(), g.end(), leaf) != g.end())
        for (const auto& sibling : g)
          if (sibling != leaf) candidates.push_back(parent + sibling);
  }
  for (const auto& f : files_) {
    for (const auto& c : candidates) {
      if (const SafetensorsTensor* t = f->find(c)) {
        out.push_back({f.get(), t, nullptr});
        break;
      }
      if (const SafetensorsTensor* h = f->find(c + ".hessian")) {
        const SafetensorsTensor* n = f->find(c + ".hessian_tokens");
        if (n == nullptr || n->numel() != 1)
          throw InputError(fmt::format("{}: '{}.hessian' needs a one-value '{}.hessian_tokens'", f->path().string(), c, c));
        out.push_back({f.get(), h, n});
        break;
      }
    }
  }
  return out;
}

void check_calib_width(const CalibInput& in, size_t columns, const std::string& weight) {
  const auto& s = in.tensor->shape;
  const bool hessian = in.hessian_tokens != nullptr;
  if (!dtype_is_numeric_input(in.tensor->dtype))
    throw InputError(fmt::format("{}: calibration tensor '{}' must hold floats (F32, F16 or BF16)",
                                 in.file->path().string(), in.tensor->name));
  if (s.size() != 2)
    throw InputError(fmt::format("{}: calibration tensor '{}' has {} dimensions; it must be 2-D ({})",
                                 in.file->path().string(), in.tensor->name, s.size(),
                                 hessian ? "[in, in]" : "[tokens, in_features]"));
  if (hessian && (s[0] != columns || s[1] != columns))
    throw InputError(fmt::format("{}: Hessian '{}' is [{}, {}] but weight '{}' has {} input columns: it must be [{}, {}]",
                                 in.file->path().string(), in.tensor->name, s[0], s[1], weight, columns, columns, columns));
  if (!hessian && s[1] != columns)
    throw InputError(fmt::format("{}: calibration tensor '{}' has width {} but weight '{}' has {} input columns",
                                 in.file->path().string(), in.tensor->name, s[1], weight, columns));
  if (!hessian && s[0] == 0)
    throw InputError(fmt::format("{}: calibration tensor '{}' holds no token (shape [0, {}]): it would give weight '{}' "
                                 "no statistics",
                                 in.file->path().string(), in.tensor->name, s[1], weight));
}

void stream_activations(const CalibInput& in, size_t columns, size_t chunk,
                        const std::function<void(const float* x, size_t first_token, size_t tokens)>& fn,
                        unsigned threads) {
  constexpr size_t kPieces = 16;  // conversion pieces over threads
  const size_t n = in.tensor->shape[0], esize = dtype_size(in.tensor->dtype);
  const auto bytes = in.file->data(*in.tensor);
  // Aligned float32 entries are read where they are mapped, with no copy.
  const bool in_place = in.tensor->dtype == DType::F32 && reinterpret_cast<uintptr_t>(bytes.data()) % alignof(float) == 0;
  std::vector<float> x;
  for (size_t t0 = 0; t0 < n; t0 += chunk) {
    const size_t nt = std::min(chunk, n - t0), count = nt * columns;
    const uint8_t* src = bytes.data() + t0 * columns * esize;
    const float* v = reinterpret_cast<const float*>(src);
    if (!in_place) {
      x.resize(count);
      parallel_for(kPieces, threads, [&](size_t p, unsigned) {
        const size_t b = count * p / kPieces, e = count * (p + 1) / kPieces;
        convert_to_f32(src + b * esize, in.tensor->dtype, x.data() + b, e - b);
      });
      v = x.data();
    }
    if (const size_t i = first_non_finite(v, count, threads); i != SIZE_MAX)
      throw InputError(fmt::format("{}: calibration tensor '{}': token {}, column {} is not finite",
                                   in.file->path().string(), in.tensor->name, t0 + i / columns, i % columns));
    fn(v, t0, nt);
  }
}

}  // namespace qz
