#include "qz/pipeline/importance.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "qz/core/error.hpp"
#include "qz/core/parallel.hpp"
#include "qz/methods/hessian.hpp"
#include "qz/model/tensor_roles.hpp"

namespace qz {

namespace fs = std::filesystem;

std::vector<std::string> attach_importance(Plan& plan, const Imatrix& m, const std::string& imatrix_file) {
  std::vector<std::string> missing;
  for (auto& t : plan.tensors) {
    if (!t.format->is_quantized() || t.shape.size() != 2) continue;
    auto it = m.tensors.find(t.name);
    if (it == m.tensors.end()) {
      const std::string gguf = gguf_weight_name(t.name);
      if (!gguf.empty()) it = m.tensors.find(gguf);
    }
    if (it == m.tensors.end()) {
      missing.push_back(t.name);
      continue;
    }
    const ImatrixTensor& e = it->second;
    if (e.counts.size() != 1 || e.columns() != t.cols)
      throw InputError(fmt::format("{}: entry '{}' has {} values in {} matrices but tensor '{}' ('{}') has rows of {}",
                                   imatrix_file, it->first, e.sum2.size(), e.counts.size(), t.name, t.source_name(),
                                   t.cols));
    t.importance = std::make_shared<const std::vector<float>>(e.importance());
  }
  return missing;
}

CalibrationSet::CalibrationSet(const std::vector<fs::path>& files) {
  if (files.empty()) throw UsageError("no calibration file given");
  for (const auto& f : files) files_.push_back(std::make_unique<SafetensorsFile>(f));
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

namespace {

struct ColumnSums {
  std::vector<double> sum2;
  uint64_t tokens = 0;
};

// Sum of x^2 per column of one activation tensor [tokens, width], in row chunks over threads, combined in chunk
// order (deterministic for any thread count).
ColumnSums column_sums(const SafetensorsFile& file, const SafetensorsTensor& t, unsigned threads) {
  if (t.shape.size() != 2 || !dtype_is_numeric_input(t.dtype))
    throw InputError(fmt::format("{}: calibration tensor '{}' must be 2-D [tokens, in_features] of floats",
                                 file.path().string(), t.name));
  const size_t tokens = t.shape[0], width = t.shape[1];
  const size_t esize = dtype_size(t.dtype);
  const auto bytes = file.data(t);
  const size_t rows_per_chunk = std::max<size_t>(1, (1u << 16) / std::max<size_t>(1, width));
  const size_t chunks = (tokens + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<std::vector<double>> partial(chunks);
  std::vector<size_t> bad(chunks, SIZE_MAX);
  parallel_for(chunks, threads, [&](size_t c, unsigned) {
    const size_t r0 = c * rows_per_chunk, nr = std::min(rows_per_chunk, tokens - r0);
    std::vector<float> x(nr * width);
    convert_to_f32(bytes.data() + r0 * width * esize, t.dtype, x.data(), x.size());
    auto& s = partial[c];
    s.assign(width, 0.0);
    for (size_t r = 0; r < nr; ++r) {
      for (size_t j = 0; j < width; ++j) {
        const float v = x[r * width + j];
        if (!std::isfinite(v)) {
          bad[c] = (r0 + r) * width + j;
          return;
        }
        s[j] += static_cast<double>(v) * v;
      }
    }
  });
  ColumnSums out;
  out.sum2.assign(width, 0.0);
  out.tokens = tokens;
  for (size_t c = 0; c < chunks; ++c) {
    if (bad[c] != SIZE_MAX)
      throw InputError(fmt::format("{}: calibration tensor '{}': token {}, column {} is not finite",
                                   file.path().string(), t.name, bad[c] / width, bad[c] % width));
    for (size_t j = 0; j < width; ++j) out.sum2[j] += partial[c][j];
  }
  return out;
}

}  // namespace

namespace {

uint64_t token_count(const CalibInput& in) {
  float v = 0;
  convert_to_f32(in.file->data(*in.hessian_tokens).data(), in.hessian_tokens->dtype, &v, 1);
  if (!(v >= 1.0f)) throw InputError(fmt::format("{}: '{}' must be a positive token count", in.file->path().string(),
                                                 in.hessian_tokens->name));
  return static_cast<uint64_t>(v);
}

void check_width(const CalibInput& in, size_t columns, const std::string& weight) {
  const auto& s = in.tensor->shape;
  const bool hessian = in.hessian_tokens != nullptr;
  if (s.size() != 2 || s[1] != columns || (hessian && s[0] != columns))
    throw InputError(fmt::format("{}: calibration tensor '{}' has width {} but weight '{}' has {} input columns",
                                 in.file->path().string(), in.tensor->name, s.size() == 2 ? s[1] : 0, weight, columns));
}

Eigen::MatrixXd read_hessian(const CalibInput& in, size_t columns) {
  std::vector<float> v(columns * columns);
  convert_to_f32(in.file->data(*in.tensor).data(), in.tensor->dtype, v.data(), v.size());
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw InputError(fmt::format("{}: Hessian '{}' has a non-finite entry at ({}, {})", in.file->path().string(),
                                   in.tensor->name, i / columns, i % columns));
  Eigen::MatrixXd h(columns, columns);
  for (size_t i = 0; i < columns; ++i)
    for (size_t j = 0; j < columns; ++j) h(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = v[i * columns + j];
  return h;
}

}  // namespace

void stream_activations(const CalibInput& in, size_t columns, size_t chunk,
                        const std::function<void(const float* x, size_t first_token, size_t tokens)>& fn) {
  const size_t n = in.tensor->shape[0], esize = dtype_size(in.tensor->dtype);
  const auto bytes = in.file->data(*in.tensor);
  std::vector<float> x;
  for (size_t t0 = 0; t0 < n; t0 += chunk) {
    const size_t nt = std::min(chunk, n - t0);
    x.resize(nt * columns);
    convert_to_f32(bytes.data() + t0 * columns * esize, in.tensor->dtype, x.data(), x.size());
    for (size_t i = 0; i < x.size(); ++i)
      if (!std::isfinite(x[i]))
        throw InputError(fmt::format("{}: calibration tensor '{}': token {}, column {} is not finite",
                                     in.file->path().string(), in.tensor->name, t0 + i / columns, i % columns));
    fn(x.data(), t0, nt);
  }
}

Eigen::MatrixXd hessian_of(const std::vector<CalibInput>& inputs, size_t columns, unsigned threads, uint64_t* tokens) {
  HessianAccumulator acc(columns);
  constexpr size_t kChunk = 2048;
  for (const auto& in : inputs) {
    check_width(in, columns, in.tensor->name);
    if (in.hessian_tokens) {
      acc.add_hessian(read_hessian(in, columns), token_count(in));
      continue;
    }
    stream_activations(in, columns, kChunk, [&](const float* x, size_t, size_t nt) { acc.add_rows(x, nt, threads); });
  }
  if (tokens) *tokens = acc.tokens();
  return acc.hessian();
}

Imatrix compute_imatrix(const Checkpoint& model, const CalibrationSet& calib, unsigned threads,
                        std::vector<std::string>* missing) {
  Imatrix m;
  m.chunk_count = static_cast<uint32_t>(calib.file_count());
  for (const auto& e : model.tensors()) {
    const SafetensorsTensor& w = *e.tensor;
    if (w.shape.size() != 2) continue;
    const auto inputs = calib.inputs_of(w.name);
    if (inputs.empty()) {
      if (missing) missing->push_back(w.name);
      continue;
    }
    const size_t cols = w.shape[1];
    std::vector<double> acc(cols, 0.0);
    uint64_t tokens = 0;
    for (const auto& in : inputs) {
      check_width(in, cols, w.name);
      if (in.hessian_tokens) {  // diag(H) * N / 2 is the sum of x^2
        const uint64_t n = token_count(in);
        const Eigen::MatrixXd h = read_hessian(in, cols);
        for (size_t j = 0; j < cols; ++j) acc[j] += h(static_cast<Eigen::Index>(j), static_cast<Eigen::Index>(j)) * static_cast<double>(n) / 2.0;
        tokens += n;
        continue;
      }
      const ColumnSums s = column_sums(*in.file, *in.tensor, threads);
      for (size_t j = 0; j < cols; ++j) acc[j] += s.sum2[j];
      tokens += s.tokens;
    }
    ImatrixTensor entry;
    entry.sum2.resize(cols);
    for (size_t j = 0; j < cols; ++j) entry.sum2[j] = static_cast<float>(acc[j]);
    entry.counts = {static_cast<float>(tokens)};
    std::string name = gguf_weight_name(w.name);
    if (name.empty()) name = w.name;
    m.tensors.emplace(std::move(name), std::move(entry));
  }
  return m;
}

}  // namespace qz
