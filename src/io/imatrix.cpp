#include "qz/io/imatrix.hpp"

#include <fmt/format.h>

#include <cmath>

#include <cstring>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/mapped_file.hpp"

namespace qz {

namespace {

constexpr std::string_view kSum2Suffix = ".in_sum2";
constexpr std::string_view kCountsSuffix = ".counts";

std::vector<float> f32_tensor(const GgufFile& f, const GgufTensorInfo& t) {
  if (t.type != GgmlType::F32)
    throw InputError(fmt::format("{}: tensor '{}' must be F32", f.path().string(), t.name));
  std::vector<float> v(t.nbytes / 4);
  if (t.nbytes != 0) std::memcpy(v.data(), f.data(t).data(), t.nbytes);  // (a tensor without elements: no memcpy from null)
  return v;
}

Imatrix read_gguf_imatrix(const std::filesystem::path& path) {
  const GgufFile f(path);
  const std::string file = path.string();
  Imatrix m;
  if (const GgufValue* v = f.find("imatrix.datasets"))
    if (const auto* a = v->get_if<GgufArray>())
      for (const auto& item : a->items)
        if (const auto* s = item.get_if<std::string>()) m.datasets.push_back(*s);
  if (const GgufValue* v = f.find("imatrix.chunk_count"))
    if (const auto* u = v->get_if<uint32_t>()) m.chunk_count = *u;
  if (const GgufValue* v = f.find("imatrix.chunk_size"))
    if (const auto* u = v->get_if<uint32_t>()) m.chunk_size = *u;
  for (const auto& t : f.tensors()) {
    if (!t.name.ends_with(kSum2Suffix)) continue;
    const std::string weight = t.name.substr(0, t.name.size() - kSum2Suffix.size());
    const GgufTensorInfo* c = f.find_tensor(weight + std::string(kCountsSuffix));
    if (c == nullptr) throw InputError(fmt::format("{}: '{}' has no matching '{}.counts'", file, t.name, weight));
    ImatrixTensor e;
    e.sum2 = f32_tensor(f, t);
    if (e.sum2.empty()) throw InputError(fmt::format("{}: '{}' holds no values", file, t.name));
    e.counts = f32_tensor(f, *c);
    const uint64_t n_mat = t.ne.size() > 1 ? t.ne[1] : 1;
    if (e.counts.size() != n_mat)
      throw InputError(fmt::format("{}: '{}.counts' holds {} values for {} matrices", file, weight, e.counts.size(),
                                   n_mat));
    m.tensors.emplace(weight, std::move(e));
  }
  if (m.tensors.empty()) throw InputError(file + ": no '<tensor>.in_sum2' entries: not an imatrix file");
  return m;
}

// Legacy .dat reader with bounds checks.
class Reader {
 public:
  Reader(std::span<const uint8_t> b, std::string file) : b_(b), file_(std::move(file)) {}
  template <typename T>
  T get(const char* what) {
    if (sizeof(T) > b_.size() - pos_)
      throw InputError(fmt::format("{}: truncated legacy imatrix: {} at byte {}", file_, what, pos_));
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string get_string(size_t n, const char* what) {
    if (n > b_.size() - pos_) throw InputError(fmt::format("{}: truncated legacy imatrix: {}", file_, what));
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  size_t remaining() const { return b_.size() - pos_; }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
  std::string file_;
};

Imatrix read_legacy_imatrix(const std::filesystem::path& path) {
  const MappedFile map(path);
  const std::string file = path.string();
  Reader r(map.bytes(), file);
  const int32_t n = r.get<int32_t>("entry count");
  if (n <= 0 || static_cast<size_t>(n) > r.remaining() / 12)
    throw InputError(fmt::format("{}: legacy imatrix entry count {} is impossible", file, n));
  Imatrix m;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t len = r.get<int32_t>("name length");
    if (len <= 0 || len > 4096) throw InputError(fmt::format("{}: entry {}: bad name length {}", file, i, len));
    std::string name = r.get_string(static_cast<size_t>(len), "name");
    const int32_t ncall = r.get<int32_t>("call count");
    const int32_t nval = r.get<int32_t>("value count");
    if (nval <= 0) throw InputError(fmt::format("{}: entry '{}': bad value count {}", file, name, nval));
    if (static_cast<size_t>(nval) > r.remaining() / 4)
      throw InputError(fmt::format("{}: truncated: entry '{}' has {} values ({} bytes) but only {} bytes are left",
                                   file, name, nval, 4 * static_cast<size_t>(nval), r.remaining()));
    ImatrixTensor e;
    e.sum2.resize(static_cast<size_t>(nval));
    for (auto& v : e.sum2) v = r.get<float>("values");
    for (size_t j = 0; j < e.sum2.size(); ++j)
      if (!std::isfinite(e.sum2[j]) || e.sum2[j] < 0.0f)
        throw InputError(fmt::format("{}: entry '{}': value {} is {}: importance values are finite and not negative", file,
                                     name, j, e.sum2[j]));
    if (ncall <= 0) throw InputError(fmt::format("{}: entry '{}': call count {} must be positive", file, name, ncall));
    e.counts = {static_cast<float>(ncall)};  // values are mean(x^2) * ncall, so value / ncall is the importance
    if (!m.tensors.emplace(name, std::move(e)).second)
      throw InputError(fmt::format("{}: entry '{}' appears twice", file, name));
  }
  if (r.remaining() >= 8) {
    m.chunk_count = static_cast<uint32_t>(r.get<int32_t>("last chunk"));
    const int32_t len = r.get<int32_t>("dataset length");
    if (len > 0 && static_cast<size_t>(len) <= r.remaining()) m.datasets.push_back(r.get_string(static_cast<size_t>(len), "dataset"));
  }
  return m;
}

}  // namespace

std::vector<float> ImatrixTensor::importance() const {
  std::vector<float> out(sum2.size());
  const size_t cols = columns();
  for (size_t mat = 0; mat < counts.size(); ++mat) {
    for (size_t j = 0; j < cols; ++j) {
      const size_t i = mat * cols + j;
      out[i] = counts[mat] > 0 ? sum2[i] / counts[mat] : 1.0f;
    }
  }
  return out;
}

Imatrix read_imatrix(const std::filesystem::path& path) {
  const MappedFile probe(path);
  if (probe.size() >= 4 && std::memcmp(probe.bytes().data(), "GGUF", 4) == 0) return read_gguf_imatrix(path);
  return read_legacy_imatrix(path);
}

void write_imatrix_gguf(const std::filesystem::path& path, const Imatrix& m, bool overwrite) {
  GgufWriter w;
  w.set("general.type", "imatrix");
  w.set("imatrix.datasets", GgufValue::strings(m.datasets));
  w.set("imatrix.chunk_count", m.chunk_count);
  w.set("imatrix.chunk_size", m.chunk_size);
  for (const auto& [name, e] : m.tensors) {
    const uint64_t n_mat = e.counts.size();
    w.add_tensor(name + std::string(kSum2Suffix), {e.columns(), n_mat}, GgmlType::F32);
    w.add_tensor(name + std::string(kCountsSuffix), {1, n_mat}, GgmlType::F32);
  }
  OutputFile out(path, overwrite);
  w.write_header(out);
  for (const auto& [name, e] : m.tensors) {
    w.write_tensor_data(out, {reinterpret_cast<const uint8_t*>(e.sum2.data()), e.sum2.size() * 4});
    w.write_tensor_data(out, {reinterpret_cast<const uint8_t*>(e.counts.data()), e.counts.size() * 4});
  }
  w.finish();
  out.commit();
}

}  // namespace qz
