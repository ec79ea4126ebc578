#include "qz/calibration/statistics.hpp"

#include <algorithm>

#include <fmt/format.h>

#include <cmath>

#include "qz/core/error.hpp"
#include "qz/methods/hessian.hpp"
#include "qz/model/tensor_roles.hpp"

namespace qz {

namespace {

constexpr size_t kChunkTokens = 2048;
// The Hessian's activation chunks: up to 4096 tokens (longer float products run nearer sgemm's peak), at most
// 64 MiB of floats at a time.
size_t hessian_chunk_tokens(size_t columns) {
  return std::clamp<size_t>((size_t{64} << 20) / (4 * std::max<size_t>(1, columns)), 256, 4096);
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

Eigen::MatrixXd hessian_of(const std::vector<CalibInput>& inputs, size_t columns, unsigned threads, uint64_t* tokens) {
  HessianAccumulator acc(columns);
  for (const auto& in : inputs) {
    check_calib_width(in, columns, in.tensor->name);
    if (in.hessian_tokens) {
      acc.add_hessian(read_hessian(in, columns), in.hessian_token_count());
      continue;
    }
    stream_activations(in, columns, hessian_chunk_tokens(columns),
                       [&](const float* x, size_t, size_t nt) { acc.add_rows(x, nt, threads); }, threads);
  }
  if (tokens) *tokens = acc.tokens();
  return acc.take_hessian(threads);
}

AwqActivations awq_activations_of(const std::vector<CalibInput>& inputs, size_t columns, size_t max_tokens,
                                  const std::string& weight) {
  uint64_t total = 0;
  for (const auto& in : inputs) {
    if (in.hessian_tokens != nullptr)
      throw InputError(fmt::format("{}: '{}' is a precomputed Hessian; AWQ needs the activations themselves "
                                   "(the mean |x| per channel and a sample of tokens)",
                                   in.file->path().string(), in.tensor->name));
    check_calib_width(in, columns, weight);
    total += in.tensor->shape[0];
  }
  AwqActivationBuilder b(columns, total, max_tokens);
  for (const auto& in : inputs)
    stream_activations(in, columns, kChunkTokens, [&](const float* x, size_t, size_t nt) { b.add(x, nt); });
  return b.finish();
}

Imatrix compute_imatrix(const Checkpoint& model, const CalibrationSet& calib, std::vector<std::string>* missing) {
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
      check_calib_width(in, cols, w.name);
      if (in.hessian_tokens) {  // diag(H) * N / 2 is the sum of x^2
        const uint64_t n = in.hessian_token_count();
        const Eigen::MatrixXd h = read_hessian(in, cols);
        for (size_t j = 0; j < cols; ++j)
          acc[j] += h(static_cast<Eigen::Index>(j), static_cast<Eigen::Index>(j)) * static_cast<double>(n) / 2.0;
        tokens += n;
        continue;
      }
      stream_activations(in, cols, kChunkTokens, [&](const float* x, size_t, size_t nt) {
        for (size_t t = 0; t < nt; ++t)
          for (size_t j = 0; j < cols; ++j) acc[j] += static_cast<double>(x[t * cols + j]) * x[t * cols + j];
      });
      tokens += in.tensor->shape[0];
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
