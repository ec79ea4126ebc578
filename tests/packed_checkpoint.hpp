// A packer for GPTQ (AutoGPTQ / GPTQModel) and AWQ (AutoAWQ GEMM) checkpoints, written for the tests from the formats'
// documentation (AutoGPTQ's pack: codes of consecutive inputs as a little-endian bit stream down each qweight
// column, zeros across each qzeros row, v1 storing zero - 1; AutoAWQ's GEMM pack: 8 output columns per int32 in the
// nibble order 0 2 4 6 1 3 5 7), independently of src/model/packed_linear.cpp. Turns a float checkpoint into a
// quantized one: each linear rounded to nearest on a GPTQ-style grid (or given codes), packed, config.json extended.
#pragma once

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qz/core/half.hpp"
#include "qz/io/checkpoint.hpp"
#include "qz/io/safetensors.hpp"

namespace qz::test {

struct PackSpec {
  std::string method = "gptq";  // gptq | awq
  std::string format = "gptq";  // gptq (v1) | gptq_v2
  int bits = 4;
  int group = 128;  // -1: one per row
  bool sym = true;
  bool desc_act = false;  // a permuted g_idx (groups interleaved: input i in group i % groups)
};

// One linear's grid: codes q[out][in], per group scale (fp16 bits) and zero.
struct LinearCodes {
  size_t out = 0, in = 0, groups = 0;
  std::vector<int32_t> q;        // out * in
  std::vector<uint16_t> scale;   // groups * out
  std::vector<int32_t> zero;     // groups * out
  std::vector<int32_t> g_idx;    // in
  float value(size_t j, size_t i) const {
    const size_t g = static_cast<size_t>(g_idx[i]);
    return fp16_to_fp32(scale[g * out + j]) * static_cast<float>(q[j * in + i] - zero[g * out + j]);
  }
};

// Round-to-nearest on GPTQ's grid: asymmetric scale = (max - min) / maxq over the group (0 always inside),
// zero = round(-min / scale); symmetric scale = 2 max|w| / maxq, zero = (maxq + 1) / 2.
inline LinearCodes rtn_codes(const std::vector<float>& w, size_t out, size_t in, const PackSpec& s) {
  LinearCodes c;
  c.out = out;
  c.in = in;
  const size_t group = s.group < 0 ? in : static_cast<size_t>(s.group);
  c.groups = (in + group - 1) / group;
  c.q.resize(out * in);
  c.scale.resize(c.groups * out);
  c.zero.resize(c.groups * out);
  c.g_idx.resize(in);
  for (size_t i = 0; i < in; ++i) c.g_idx[i] = static_cast<int32_t>(s.desc_act ? i % c.groups : i / group);
  const int maxq = (1 << s.bits) - 1;
  for (size_t j = 0; j < out; ++j)
    for (size_t g = 0; g < c.groups; ++g) {
      float lo = 0, hi = 0;
      for (size_t i = 0; i < in; ++i)
        if (static_cast<size_t>(c.g_idx[i]) == g) {
          lo = std::min(lo, w[j * in + i]);
          hi = std::max(hi, w[j * in + i]);
        }
      float scale;
      int zero;
      if (s.sym) {
        const float amax = std::max(-lo, hi);
        scale = 2 * amax / static_cast<float>(maxq);
        zero = (maxq + 1) / 2;
      } else {
        scale = (hi - lo) / static_cast<float>(maxq);
        zero = static_cast<int>(std::nearbyint(-lo / scale));
      }
      if (scale == 0) scale = 1;
      c.scale[g * out + j] = fp32_to_fp16(scale);
      c.zero[g * out + j] = zero;
      const float d = fp16_to_fp32(c.scale[g * out + j]);
      for (size_t i = 0; i < in; ++i)
        if (static_cast<size_t>(c.g_idx[i]) == g)
          c.q[j * in + i] = std::clamp(static_cast<int>(std::nearbyint(w[j * in + i] / d)) + zero, 0, maxq);
    }
  return c;
}

inline std::vector<uint8_t> int32_bytes(const std::vector<uint32_t>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Writes value v (bits wide) at bit position `bit` of a little-endian stream of 32-bit words.
inline void put_bits(std::vector<uint32_t>& words, size_t word0, size_t stride, size_t bit, uint32_t v, int bits) {
  for (int k = 0; k < bits; ++k) {
    const size_t b = bit + static_cast<size_t>(k);
    if ((v >> k) & 1u) words[word0 + (b / 32) * stride] |= 1u << (b % 32);
  }
}

// The packed tensors of one linear `base`, appended to blobs.
inline void pack_linear(const std::string& base, const LinearCodes& c, const PackSpec& s, std::vector<SafetensorsBlob>& blobs) {
  const size_t out = c.out, in = c.in;
  std::vector<uint16_t> sc = c.scale;
  std::vector<uint8_t> scb(sc.size() * 2);
  std::memcpy(scb.data(), sc.data(), scb.size());
  if (s.method == "awq") {
    constexpr int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    std::vector<uint32_t> qw(in * out / 8, 0), qz(c.groups * out / 8, 0);
    for (size_t i = 0; i < in; ++i)
      for (size_t w = 0; w < out / 8; ++w)
        for (int p = 0; p < 8; ++p)
          qw[i * (out / 8) + w] |= static_cast<uint32_t>(c.q[(w * 8 + static_cast<size_t>(order[p])) * in + i]) << (4 * p);
    for (size_t g = 0; g < c.groups; ++g)
      for (size_t w = 0; w < out / 8; ++w)
        for (int p = 0; p < 8; ++p)
          qz[g * (out / 8) + w] |= static_cast<uint32_t>(c.zero[g * out + w * 8 + static_cast<size_t>(order[p])]) << (4 * p);
    blobs.push_back({base + ".qweight", DType::I32, {in, out / 8}, int32_bytes(qw)});
    blobs.push_back({base + ".qzeros", DType::I32, {c.groups, out / 8}, int32_bytes(qz)});
    blobs.push_back({base + ".scales", DType::F16, {c.groups, out}, scb});
    return;
  }
  const size_t b = static_cast<size_t>(s.bits);
  std::vector<uint32_t> qw(in * b / 32 * out, 0), qz(c.groups * out * b / 32, 0);
  for (size_t j = 0; j < out; ++j)  // column j of qweight: inputs as a bit stream down the rows (stride out)
    for (size_t i = 0; i < in; ++i) put_bits(qw, j, out, i * b, static_cast<uint32_t>(c.q[j * in + i]), s.bits);
  for (size_t g = 0; g < c.groups; ++g)
    for (size_t j = 0; j < out; ++j) {
      const int32_t stored = c.zero[g * out + j] - (s.format == "gptq" ? 1 : 0);
      put_bits(qz, g * (out * b / 32), 1, j * b, static_cast<uint32_t>(stored) & ((1u << s.bits) - 1u), s.bits);
    }
  std::vector<uint8_t> gib(in * 4);
  std::memcpy(gib.data(), c.g_idx.data(), gib.size());
  blobs.push_back({base + ".qweight", DType::I32, {in * b / 32, out}, int32_bytes(qw)});
  blobs.push_back({base + ".qzeros", DType::I32, {c.groups, out * b / 32}, int32_bytes(qz)});
  blobs.push_back({base + ".scales", DType::F16, {c.groups, out}, scb});
  blobs.push_back({base + ".g_idx", DType::I32, {in}, gib});
}

inline nlohmann::json quantization_config(const PackSpec& s) {
  nlohmann::json q = {{"quant_method", s.method}, {"bits", s.bits}, {"group_size", s.group}};
  if (s.method == "awq") {
    q["zero_point"] = !s.sym;
    q["version"] = "gemm";
  } else {
    q["sym"] = s.sym;
    q["desc_act"] = s.desc_act;
    q["checkpoint_format"] = s.format;
  }
  return q;
}

// Copies the float checkpoint `from` to `to` with every linear of the decoder blocks (2-D *_proj.weight) replaced
// by its packed form: codes from `codes_of(name, weights, out, in)`. Returns each linear's codes by weight name.
template <typename CodesOf>
std::map<std::string, LinearCodes> write_packed_checkpoint(const std::filesystem::path& from, const std::filesystem::path& to,
                                                           const PackSpec& s, CodesOf codes_of) {
  namespace fs = std::filesystem;
  fs::create_directories(to);
  const Checkpoint ck = Checkpoint::open(from);
  std::vector<SafetensorsBlob> blobs;
  std::map<std::string, LinearCodes> all;
  for (const auto& e : ck.tensors()) {
    const std::string& n = e.tensor->name;
    const auto& shape = e.tensor->shape;
    std::vector<float> w(e.tensor->numel());
    convert_to_f32(e.bytes().data(), e.tensor->dtype, w.data(), w.size());
    if (n.find("_proj.weight") != std::string::npos && shape.size() == 2) {
      if (auto c = codes_of(n, w, shape[0], shape[1])) {
        pack_linear(n.substr(0, n.size() - 7), *c, s, blobs);
        all[n] = std::move(*c);
        continue;
      }
    }
    const auto bytes = e.bytes();
    blobs.push_back({n, e.tensor->dtype, shape, std::vector<uint8_t>(bytes.begin(), bytes.end())});
  }
  write_safetensors(to / "model.safetensors", blobs);
  nlohmann::json config = *ck.config();
  config["quantization_config"] = quantization_config(s);
  std::ofstream(to / "config.json") << config.dump(2);
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    if (fs::exists(from / f)) fs::copy_file(from / f, to / f, fs::copy_options::overwrite_existing);
  return all;
}

}  // namespace qz::test
