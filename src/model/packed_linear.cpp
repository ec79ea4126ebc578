#include "qz/model/packed_linear.hpp"

#include <fmt/format.h>

#include <cstring>
#include <fstream>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"

namespace qz {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

uint32_t word_at(const Checkpoint::Entry& e, size_t index) {
  uint32_t w;
  std::memcpy(&w, e.bytes().data() + index * 4, 4);
  return w;
}

// Code k of a little-endian bit stream of b-bit codes whose n-th 32-bit word is word(n).
template <typename Word>
int32_t stream_code(Word word, size_t k, int bits) {
  const size_t bit = k * static_cast<size_t>(bits);
  uint64_t v = word(bit / 32);
  if (bit % 32 + static_cast<size_t>(bits) > 32) v |= static_cast<uint64_t>(word(bit / 32 + 1)) << 32;
  return static_cast<int32_t>((v >> (bit % 32)) & ((1u << bits) - 1u));
}

constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};     // nibble p holds column 8w + kAwqOrder[p]
constexpr int kAwqNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column 8w + k is nibble kAwqNibbleOf[k]
static_assert(kAwqOrder[kAwqNibbleOf[3]] == 3 && kAwqOrder[kAwqNibbleOf[6]] == 6);

int32_t awq_code(const Checkpoint::Entry& e, size_t row, size_t words_per_row, size_t col) {
  const uint32_t w = word_at(e, row * words_per_row + col / 8);
  return static_cast<int32_t>((w >> (4 * kAwqNibbleOf[col % 8])) & 15u);
}

const json* find_key(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

}  // namespace

std::string PackedScheme::name() const {
  if (kind == PackedKind::Bnb4) return "bitsandbytes 4-bit (NF4 / FP4)";
  const char* kind_name = kind == PackedKind::AwqGemm ? "AWQ (GEMM)" : kind == PackedKind::GptqV2 ? "GPTQ (gptq_v2)" : "GPTQ";
  const std::string groups = group_size < 0 ? "one group per row" : fmt::format("groups of {}", group_size);
  return fmt::format("{} {}-bit {}, {}{}", kind_name, bits, groups, sym ? "symmetric" : "with zero points",
                     desc_act ? ", act-order" : "");
}

std::optional<PackedScheme> read_packed_scheme(const fs::path& dir, const std::optional<json>& config) {
  json q;
  std::string file;
  if (config && config->contains("quantization_config")) {
    q = (*config)["quantization_config"];
    file = (dir / "config.json").string();
  } else if (fs::exists(dir / "quantize_config.json")) {
    file = (dir / "quantize_config.json").string();
    std::ifstream f(dir / "quantize_config.json");
    try {
      q = json::parse(f);
    } catch (const json::exception& e) {
      throw InputError(fmt::format("{}: invalid JSON: {}", file, e.what()));
    }
    if (!q.contains("quant_method")) q["quant_method"] = "gptq";  // AutoGPTQ's own file
  } else {
    return std::nullopt;
  }
  if (!q.is_object()) throw InputError(file + ": quantization_config is not an object");
  auto integer = [&](const char* key, int fallback) {
    const json* v = find_key(q, key);
    if (v == nullptr || v->is_null()) return fallback;
    if (!v->is_number_integer()) throw InputError(fmt::format("{}: quantization_config.{} is not an integer: {}", file, key, v->dump()));
    return v->get<int>();
  };
  auto boolean = [&](const char* key, bool fallback) {
    const json* v = find_key(q, key);
    if (v == nullptr || v->is_null()) return fallback;
    if (!v->is_boolean()) throw InputError(fmt::format("{}: quantization_config.{} is not true or false: {}", file, key, v->dump()));
    return v->get<bool>();
  };
  auto text = [&](const char* key, const std::string& fallback) {
    const json* v = find_key(q, key);
    if (v == nullptr || v->is_null()) return fallback;
    if (!v->is_string()) throw InputError(fmt::format("{}: quantization_config.{} is not a string: {}", file, key, v->dump()));
    return v->get<std::string>();
  };
  const std::string method = text("quant_method", "");
  PackedScheme s;
  s.file = file;
  s.bits = integer("bits", 4);
  s.group_size = integer("group_size", 128);
  if (s.group_size == 0 || s.group_size < -1)
    throw InputError(fmt::format("{}: quantization_config.group_size {}: a positive group or -1", file, s.group_size));
  if (method == "gptq") {
    const std::string format = text("checkpoint_format", "gptq");
    if (format == "gptq") s.kind = PackedKind::GptqV1;
    else if (format == "gptq_v2") s.kind = PackedKind::GptqV2;
    else throw InputError(fmt::format("{}: quantization_config.checkpoint_format '{}' is not read (gptq, gptq_v2)", file, format));
    s.desc_act = boolean("desc_act", false);
    s.sym = boolean("sym", true);
    if (s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8)
      throw InputError(fmt::format("{}: quantization_config.bits {}: GPTQ packs 2, 3, 4 or 8 bits", file, s.bits));
  } else if (method == "awq") {
    const std::string version = text("version", "gemm");
    if (version != "gemm" && version != "GEMM")
      throw InputError(fmt::format("{}: quantization_config.version '{}': only AutoAWQ's GEMM layout is read", file, version));
    s.kind = PackedKind::AwqGemm;
    s.sym = !boolean("zero_point", true);
    if (s.bits != 4) throw InputError(fmt::format("{}: quantization_config.bits {}: AWQ packs 4 bits", file, s.bits));
    if (s.group_size < 0) throw InputError(fmt::format("{}: quantization_config.group_size must be positive for AWQ", file));
  } else if (method == "bitsandbytes") {
    if (!boolean("load_in_4bit", false))
      throw InputError(fmt::format("{}: quant_method bitsandbytes without load_in_4bit: only bitsandbytes' 4-bit (NF4 / "
                                   "FP4) checkpoints are read, not LLM.int8()",
                                   file));
    s.kind = PackedKind::Bnb4;
    s.bits = 4;
    s.group_size = 64;
    s.sym = true;
  } else {
    throw InputError(fmt::format("{}: quant_method '{}' is not read (gptq, awq)", file, method));
  }
  return s;
}

size_t PackedLinear::group_of(size_t i) const {
  if (!group_index_.empty()) return static_cast<size_t>(group_index_[i]);
  return scheme.group_size < 0 ? 0 : i / static_cast<size_t>(scheme.group_size);
}

bool PackedLinear::ordered_groups() const {
  if (group_index_.empty()) return true;
  for (size_t i = 0; i < in_features; ++i)
    if (static_cast<size_t>(group_index_[i]) != (scheme.group_size < 0 ? 0 : i / static_cast<size_t>(scheme.group_size)))
      return false;
  return true;
}

int32_t PackedLinear::zero(size_t g, size_t j) const {
  if (scheme.kind == PackedKind::AwqGemm) return awq_code(*qzeros, g, out_features / 8, j);
  const size_t words = qzeros->tensor->shape[1];
  const int32_t z = stream_code([&](size_t n) { return word_at(*qzeros, g * words + n); }, j, scheme.bits);
  return scheme.kind == PackedKind::GptqV1 ? z + 1 : z;
}

uint16_t PackedLinear::scale_bits(size_t g, size_t j) const {
  const size_t k = g * out_features + j;
  if (scales->tensor->dtype == DType::F16) {
    uint16_t h;
    std::memcpy(&h, scales->bytes().data() + k * 2, 2);
    return h;
  }
  float f;
  convert_to_f32(scales->bytes().data() + k * dtype_size(scales->tensor->dtype), scales->tensor->dtype, &f, 1);
  return fp32_to_fp16(f);
}

float PackedLinear::scale(size_t g, size_t j) const {
  const size_t k = g * out_features + j;
  float f;
  convert_to_f32(scales->bytes().data() + k * dtype_size(scales->tensor->dtype), scales->tensor->dtype, &f, 1);
  return f;
}

void PackedLinear::codes_of_row(size_t j, int32_t* q) const {
  if (scheme.kind == PackedKind::AwqGemm) {
    for (size_t i = 0; i < in_features; ++i) q[i] = awq_code(*qweight, i, out_features / 8, j);
    return;
  }
  const auto word = [&](size_t n) { return word_at(*qweight, n * out_features + j); };
  for (size_t i = 0; i < in_features; ++i) q[i] = stream_code(word, i, scheme.bits);
}

void PackedLinear::dequantize_row(size_t j, float* out) const {
  std::vector<int32_t> q(in_features);
  codes_of_row(j, q.data());
  std::vector<float> s(groups);
  std::vector<int32_t> z(groups);
  for (size_t g = 0; g < groups; ++g) {
    s[g] = scale(g, j);
    z[g] = zero(g, j);
  }
  for (size_t i = 0; i < in_features; ++i) {
    const size_t g = group_of(i);
    out[i] = s[g] * static_cast<float>(q[i] - z[g]);
  }
}

bool is_packed_part(const std::string& name) {
  for (const char* s : {".qweight", ".qzeros", ".scales", ".g_idx"})
    if (name.ends_with(s)) return true;
  return false;
}

std::vector<const Checkpoint::Entry*> Bnb4Linear::parts() const {
  std::vector<const Checkpoint::Entry*> v = {weight, absmax, quant_map};
  if (double_quant) v.insert(v.end(), {nested_absmax, nested_quant_map});
  return v;
}

void Bnb4Linear::dequantize_row(size_t j, float* out) const {
  const uint8_t* codes = weight->bytes().data();
  float map[16];
  std::memcpy(map, quant_map->bytes().data(), sizeof(map));
  const size_t first = j * in_features;
  size_t cached_block = SIZE_MAX;
  float scale = 0.0f;
  for (size_t i = 0; i < in_features; ++i) {
    const size_t k = first + i, b = k / blocksize;
    if (b != cached_block) {
      cached_block = b;
      if (double_quant) {
        float nested, entry;
        std::memcpy(&nested, nested_absmax->bytes().data() + (b / 256) * 4, 4);
        std::memcpy(&entry, nested_quant_map->bytes().data() + absmax->bytes()[b] * 4, 4);
        scale = entry * nested + nested_offset;
      } else {
        std::memcpy(&scale, absmax->bytes().data() + b * 4, 4);
      }
    }
    const uint8_t byte = codes[k / 2];
    out[i] = map[k % 2 == 0 ? byte >> 4 : byte & 15] * scale;
  }
}

bool is_bnb4_side_part(const std::string& name) {
  for (const char* s : {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax", ".weight.nested_quant_map"})
    if (name.ends_with(s)) return true;
  return name.find(".weight.quant_state.") != std::string::npos;
}

std::vector<Bnb4Linear> find_bnb4_linears(const Checkpoint& ckpt, const PackedScheme& scheme) {
  std::vector<Bnb4Linear> out;
  for (const auto& e : ckpt.tensors()) {
    const std::string& name = e.tensor->name;
    const size_t at = name.find(".weight.quant_state.bitsandbytes__");
    if (at == std::string::npos) continue;
    const std::string file = e.file->path().string();
    Bnb4Linear l;
    l.base = name.substr(0, at);
    l.quant_type = name.substr(at + std::string(".weight.quant_state.bitsandbytes__").size());
    const auto bytes = e.bytes();
    json state;
    try {
      state = json::parse(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    } catch (const json::exception& x) {
      throw InputError(fmt::format("{}: tensor '{}': the quant state is not JSON: {}", file, name, x.what()));
    }
    auto need = [&](const char* suffix) {
      const Checkpoint::Entry* x = ckpt.find(l.base + suffix);
      if (x == nullptr) throw InputError(fmt::format("{}: bitsandbytes linear '{}' has no '{}{}' ({})", file, l.base, l.base, suffix, scheme.name()));
      return x;
    };
    try {
      l.blocksize = state.at("blocksize").get<size_t>();
      const auto shape = state.at("shape").get<std::vector<uint64_t>>();
      if (shape.size() != 2) throw InputError(fmt::format("{}: tensor '{}': quant state shape is not 2-D", file, name));
      l.out_features = shape[0];
      l.in_features = shape[1];
      l.double_quant = state.contains("nested_offset");
      if (l.double_quant) l.nested_offset = state.at("nested_offset").get<float>();
    } catch (const json::exception& x) {
      throw InputError(fmt::format("{}: tensor '{}': quant state: {}", file, name, x.what()));
    }
    if (l.quant_type != "nf4" && l.quant_type != "fp4")
      throw InputError(fmt::format("{}: tensor '{}': quant type '{}' (nf4 or fp4)", file, name, l.quant_type));
    if (l.blocksize == 0 || (l.blocksize & (l.blocksize - 1)) != 0)
      throw InputError(fmt::format("{}: tensor '{}': blocksize {} is not a power of two", file, name, l.blocksize));
    l.weight = need(".weight");
    l.absmax = need(".weight.absmax");
    l.quant_map = need(".weight.quant_map");
    const uint64_t n = l.out_features * l.in_features, blocks = (n + l.blocksize - 1) / l.blocksize;
    auto check = [&](const Checkpoint::Entry* x, DType dt, uint64_t count) {
      if (x->tensor->dtype != dt || x->tensor->numel() != count)
        throw InputError(fmt::format("{}: tensor '{}' is {} with {} values, but the quant state ({} x {}, blocks of {}) "
                                     "needs {} with {}",
                                     x->file->path().string(), x->tensor->name, dtype_name(x->tensor->dtype),
                                     x->tensor->numel(), l.out_features, l.in_features, l.blocksize, dtype_name(dt), count));
    };
    check(l.weight, DType::U8, (n + 1) / 2);
    check(l.quant_map, DType::F32, 16);
    if (l.double_quant) {
      l.nested_absmax = need(".weight.nested_absmax");
      l.nested_quant_map = need(".weight.nested_quant_map");
      check(l.absmax, DType::U8, blocks);
      check(l.nested_absmax, DType::F32, (blocks + 255) / 256);
      check(l.nested_quant_map, DType::F32, 256);
    } else {
      check(l.absmax, DType::F32, blocks);
    }
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<PackedLinear> find_packed_linears(const Checkpoint& ckpt, const PackedScheme& scheme) {
  std::vector<PackedLinear> out;
  for (const auto& e : ckpt.tensors()) {
    const std::string& name = e.tensor->name;
    if (!name.ends_with(".qweight")) continue;
    PackedLinear p;
    p.scheme = scheme;
    p.base = name.substr(0, name.size() - 8);
    const std::string file = e.file->path().string();
    auto part = [&](const char* suffix, bool required) {
      const Checkpoint::Entry* x = ckpt.find(p.base + suffix);
      if (x == nullptr && required)
        throw InputError(fmt::format("{}: packed linear '{}' has a qweight but no '{}{}' ({})", file, p.base, p.base, suffix,
                                     scheme.name()));
      return x;
    };
    p.qweight = &e;
    p.qzeros = part(".qzeros", true);
    p.scales = part(".scales", true);
    p.g_idx = scheme.kind == PackedKind::AwqGemm ? nullptr : part(".g_idx", false);
    auto shape_error = [&](const Checkpoint::Entry& t, const std::string& want) {
      return InputError(fmt::format("{}: tensor '{}' is [{}], but {} needs {}", t.file->path().string(), t.tensor->name,
                                    fmt::join(t.tensor->shape, ", "), scheme.name(), want));
    };
    for (const Checkpoint::Entry* t : {p.qweight, p.qzeros})
      if (t->tensor->dtype != DType::I32 || t->tensor->shape.size() != 2) throw shape_error(*t, "a 2-D int32 tensor");
    const auto& sc = p.scales->tensor->shape;
    if (sc.size() != 2 || (p.scales->tensor->dtype != DType::F16 && p.scales->tensor->dtype != DType::BF16 &&
                           p.scales->tensor->dtype != DType::F32))
      throw shape_error(*p.scales, "a 2-D float tensor [groups, out_features]");
    p.groups = sc[0];
    p.out_features = sc[1];
    const auto& qw = p.qweight->tensor->shape;
    const auto& qz = p.qzeros->tensor->shape;
    const uint64_t b = static_cast<uint64_t>(scheme.bits);
    if (scheme.kind == PackedKind::AwqGemm) {
      p.in_features = qw[0];
      if (qw[1] * 8 != p.out_features) throw shape_error(*p.qweight, fmt::format("[in_features, {}]", p.out_features / 8));
      if (qz[0] != p.groups || qz[1] * 8 != p.out_features)
        throw shape_error(*p.qzeros, fmt::format("[{}, {}]", p.groups, p.out_features / 8));
    } else {
      if (qw[1] != p.out_features) throw shape_error(*p.qweight, fmt::format("[in_features * {} / 32, {}]", b, p.out_features));
      p.in_features = qw[0] * 32 / b;
      if (qz[0] != p.groups || qz[1] * 32 != p.out_features * b)
        throw shape_error(*p.qzeros, fmt::format("[{}, {}]", p.groups, p.out_features * b / 32));
    }
    const uint64_t want_groups =
        scheme.group_size < 0 ? 1 : (p.in_features + static_cast<uint64_t>(scheme.group_size) - 1) / static_cast<uint64_t>(scheme.group_size);
    if (p.groups != want_groups && !(scheme.desc_act && p.g_idx))
      throw shape_error(*p.scales, fmt::format("[{}, {}] ({} inputs in groups of {})", want_groups, p.out_features,
                                               p.in_features, scheme.group_size));
    if (p.g_idx) {
      const auto& gi = p.g_idx->tensor->shape;
      if (p.g_idx->tensor->dtype != DType::I32 || gi.size() != 1 || gi[0] != p.in_features)
        throw shape_error(*p.g_idx, fmt::format("an int32 [{}]", p.in_features));
      p.group_index_.resize(p.in_features);
      std::memcpy(p.group_index_.data(), p.g_idx->bytes().data(), p.in_features * 4);
      for (size_t i = 0; i < p.in_features; ++i)
        if (p.group_index_[i] < 0 || static_cast<uint64_t>(p.group_index_[i]) >= p.groups)
          throw InputError(fmt::format("{}: tensor '{}': input {} is in group {}, but there are {} groups",
                                       p.g_idx->file->path().string(), p.g_idx->tensor->name, i, p.group_index_[i], p.groups));
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::optional<GgmlType> packed_native_type(const PackedLinear& p, std::string* why_not) {
  auto no = [&](const std::string& why) -> std::optional<GgmlType> {
    if (why_not) *why_not = why;
    return std::nullopt;
  };
  const size_t group = p.scheme.group_size < 0 ? p.in_features : static_cast<size_t>(p.scheme.group_size);
  if (p.in_features % 32 != 0 || group % 32 != 0)
    return no(fmt::format("groups of {} are not a multiple of llama.cpp's blocks of 32", group));
  if (!p.ordered_groups()) return no("act-order: its groups are not runs of consecutive inputs");
  if (p.scheme.bits != 4 && p.scheme.bits != 8) return no(fmt::format("llama.cpp has no {}-bit block", p.scheme.bits));
  const int32_t mid = 1 << (p.scheme.bits - 1);
  bool symmetric = true;
  for (size_t g = 0; g < p.groups && symmetric; ++g)
    for (size_t j = 0; j < p.out_features && symmetric; ++j) symmetric = p.zero(g, j) == mid;
  if (p.scheme.bits == 4) return symmetric ? GgmlType::Q4_0 : GgmlType::Q4_1;
  if (symmetric) return GgmlType::Q8_0;
  return no("llama.cpp has no 8-bit block with a zero point");
}

}  // namespace qz
