#include "qz/model/tokenizer.hpp"

#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <unordered_map>
#include <nlohmann/json.hpp>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/mapped_file.hpp"
#include "qz/io/output_file.hpp"

namespace qz {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---- minimal protobuf wire format (hand-written: the project's stack has no protobuf library) ----
class ProtoReader {
 public:
  ProtoReader(const uint8_t* p, size_t n, const std::string& file) : p_(p), end_(p + n), file_(file) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) fail("truncated varint");
      const uint8_t b = *p_++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint too long");
  }
  std::pair<const uint8_t*, size_t> bytes() {
    const uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) fail("length-delimited field runs past the end");
    const uint8_t* at = p_;
    p_ += n;
    return {at, static_cast<size_t>(n)};
  }
  float fixed32f() {
    if (end_ - p_ < 4) fail("truncated fixed32");
    float f;
    std::memcpy(&f, p_, 4);
    p_ += 4;
    return f;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); return;
      case 1:
        if (end_ - p_ < 8) fail("truncated fixed64");
        p_ += 8;
        return;
      case 2: bytes(); return;
      case 5: fixed32f(); return;
      default: fail(fmt::format("unsupported wire type {}", wire));
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(fmt::format("{}: malformed SentencePiece model: {}", file_, what));
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  const std::string& file_;
};

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

std::optional<json> read_json(const fs::path& p) {
  if (!fs::exists(p)) return std::nullopt;
  std::ifstream f(p);
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: invalid JSON: {}", p.string(), e.what()));
  }
}

std::optional<uint32_t> id_of(const std::vector<std::string>& tokens, const json& v) {
  std::string s;
  if (v.is_string()) s = v.get<std::string>();
  else if (v.is_object() && v.contains("content") && v["content"].is_string()) s = v["content"].get<std::string>();
  else return std::nullopt;
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] == s) return static_cast<uint32_t>(i);
  return std::nullopt;
}

std::optional<uint32_t> json_id(const std::optional<json>& j, const char* key) {
  if (!j) return std::nullopt;
  const auto it = j->find(key);
  if (it == j->end()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint32_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_unsigned()) return (*it)[0].get<uint32_t>();
  return std::nullopt;
}

void pad_vocabulary(Vocabulary& v, uint32_t vocab_size) {
  for (size_t i = v.tokens.size(); i < vocab_size; ++i) {
    v.tokens.push_back(fmt::format("[PAD{}]", i));
    if (!v.scores.empty() || v.model == "llama") v.scores.push_back(-1000.0f);
    v.types.push_back(5);  // unused
  }
}

std::string pre_tokenizer_name(const json& tok, const std::string& arch) {
  const std::string pre = tok.contains("pre_tokenizer") ? tok["pre_tokenizer"].dump() : std::string();
  if (pre.find(R"(\\p{N}{1,3})") != std::string::npos) return "llama-bpe";
  if (pre.find(R"(\\p{N}| ?[^\\s\\p{L}\\p{N}]+)") != std::string::npos || arch == "qwen2" || arch == "qwen3") return "qwen2";
  // GPT-2's own: ByteLevel with its regex and nothing else.
  if (tok.contains("pre_tokenizer") && tok["pre_tokenizer"].is_object() &&
      tok["pre_tokenizer"].value("type", "") == "ByteLevel" && tok["pre_tokenizer"].value("use_regex", true))
    return "gpt-2";
  return "default";
}

}  // namespace

std::vector<SentencePiece> read_sentencepiece(const fs::path& file, bool* add_dummy_prefix) {
  const MappedFile m(file);
  const std::string name = file.string();
  ProtoReader r(m.bytes().data(), m.size(), name);
  std::vector<SentencePiece> pieces;
  if (add_dummy_prefix) *add_dummy_prefix = true;
  while (!r.done()) {
    const uint64_t key = r.varint();
    const auto field = key >> 3;
    const auto wire = static_cast<uint32_t>(key & 7);
    if (field == 1 && wire == 2) {
      const auto [p, n] = r.bytes();
      ProtoReader pr(p, n, name);
      SentencePiece sp;
      while (!pr.done()) {
        const uint64_t k = pr.varint();
        const auto f = k >> 3;
        const auto w = static_cast<uint32_t>(k & 7);
        if (f == 1 && w == 2) {
          const auto [s, len] = pr.bytes();
          sp.piece.assign(reinterpret_cast<const char*>(s), len);
        } else if (f == 2 && w == 5) {
          sp.score = pr.fixed32f();
        } else if (f == 3 && w == 0) {
          sp.type = static_cast<int32_t>(pr.varint());
        } else {
          pr.skip(w);
        }
      }
      pieces.push_back(std::move(sp));
    } else if (field == 3 && wire == 2 && add_dummy_prefix) {  // normalizer_spec
      const auto [p, n] = r.bytes();
      ProtoReader nr(p, n, name);
      while (!nr.done()) {
        const uint64_t k = nr.varint();
        if ((k >> 3) == 3 && (k & 7) == 0) *add_dummy_prefix = nr.varint() != 0;
        else nr.skip(static_cast<uint32_t>(k & 7));
      }
    } else {
      r.skip(wire);
    }
  }
  if (pieces.empty()) throw InputError(name + ": SentencePiece model holds no pieces");
  return pieces;
}

void write_sentencepiece(const fs::path& file, const std::vector<SentencePiece>& pieces) {
  const std::string out = sentencepiece_model_bytes(pieces, true);
  OutputFile o(file, true);
  o.write(out.data(), out.size());
  o.commit();
}

std::string sentencepiece_model_bytes(const std::vector<SentencePiece>& pieces, bool add_dummy_prefix) {
  std::string out;
  for (const auto& sp : pieces) {
    std::string msg;
    put_varint(msg, (1 << 3) | 2);
    put_varint(msg, sp.piece.size());
    msg += sp.piece;
    put_varint(msg, (2 << 3) | 5);
    char f[4];
    std::memcpy(f, &sp.score, 4);
    msg.append(f, 4);
    put_varint(msg, (3 << 3) | 0);
    put_varint(msg, static_cast<uint64_t>(sp.type));
    put_varint(out, (1 << 3) | 2);
    put_varint(out, msg.size());
    out += msg;
  }
  // trainer_spec (2): model_type (3) = BPE (2), byte_fallback (35) = true, as llama.cpp's SentencePiece models;
  // normalizer_spec (3): name (1) "identity", add_dummy_prefix (3) true, remove_extra_whitespaces (4) false,
  // escape_whitespaces (5) true. The SentencePiece library then encodes as llama.cpp's "llama" tokenizer does.
  std::string trainer;
  put_varint(trainer, (3 << 3) | 0);
  put_varint(trainer, 2);
  put_varint(trainer, (35 << 3) | 0);
  put_varint(trainer, 1);
  put_varint(out, (2 << 3) | 2);
  put_varint(out, trainer.size());
  out += trainer;
  std::string norm;
  put_varint(norm, (1 << 3) | 2);
  put_varint(norm, 8);
  norm += "identity";
  for (const auto& [field, value] : {std::pair{3, add_dummy_prefix ? 1 : 0}, std::pair{4, 0}, std::pair{5, 1}}) {
    put_varint(norm, static_cast<uint64_t>(field) << 3);
    put_varint(norm, static_cast<uint64_t>(value));
  }
  put_varint(out, (3 << 3) | 2);
  put_varint(out, norm.size());
  out += norm;
  return out;
}

namespace {
std::optional<Vocabulary> read_vocabulary_of(const fs::path& dir, const std::string& arch, uint32_t vocab_size);
}

std::optional<Vocabulary> read_vocabulary(const fs::path& dir, const std::string& arch, uint32_t vocab_size) {
  try {
    return read_vocabulary_of(dir, arch, vocab_size);
  } catch (const json::exception& e) {  // a key of the wrong JSON type anywhere in the tokenizer files
    throw InputError(fmt::format("{}: the tokenizer files (tokenizer.json, tokenizer_config.json): {}", dir.string(), e.what()));
  }
}

namespace {

std::optional<Vocabulary> read_vocabulary_of(const fs::path& dir, const std::string& arch, uint32_t vocab_size) {
  Vocabulary v;
  const auto tok_config = read_json(dir / "tokenizer_config.json");
  const auto gen_config = read_json(dir / "generation_config.json");
  const auto config = read_json(dir / "config.json");
  if (fs::exists(dir / "tokenizer.model")) {
    v.model = "llama";
    v.pre = "default";  // as llama.cpp's converter writes it for SentencePiece vocabularies
    bool dummy = true;
    for (auto& sp : read_sentencepiece(dir / "tokenizer.model", &dummy)) {
      v.tokens.push_back(std::move(sp.piece));
      v.scores.push_back(sp.score);
      v.types.push_back(sp.type);
    }
    v.add_space_prefix = dummy;
    v.unk = 0;
    v.bos = 1;
    v.eos = 2;
  } else if (fs::exists(dir / "tokenizer.json")) {
    const json tok = *read_json(dir / "tokenizer.json");
    const json& model = tok.at("model");
    if (model.value("type", std::string()) != "BPE")
      throw InputError((dir / "tokenizer.json").string() + ": only BPE tokenizers are supported");
    const std::string file = (dir / "tokenizer.json").string();
    if (!model.contains("vocab") || !model["vocab"].is_object())
      throw InputError(file + ": model.vocab is missing or not an object");
    if (!model.contains("merges") || !model["merges"].is_array())
      throw InputError(file + ": model.merges is missing or not a list");
    if (tok.contains("added_tokens") && !tok["added_tokens"].is_array())
      throw InputError(file + ": added_tokens is not a list");
    // Ids are dense: none can exceed the entries the file has (or the model's vocab_size, if larger).
    const size_t entries = model["vocab"].size() + (tok.contains("added_tokens") ? tok["added_tokens"].size() : 0);
    const size_t bound = std::max<size_t>(entries, vocab_size);
    auto checked_id = [&](const json& value, const std::string& where) {
      if (!value.is_number_integer() || value.get<int64_t>() < 0 || static_cast<uint64_t>(value.get<int64_t>()) >= bound)
        throw InputError(fmt::format("{}: {}: id {} is not a token id (a whole number from 0 to {})", file, where, value.dump(),
                                     bound - 1));
      return static_cast<size_t>(value.get<int64_t>());
    };
    std::vector<std::string> by_id;
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
      const size_t id = checked_id(it.value(), "model.vocab[\"" + it.key() + "\"]");
      if (id >= by_id.size()) by_id.resize(id + 1);
      by_id[id] = it.key();
    }
    std::vector<int32_t> types(by_id.size(), 1);
    if (tok.contains("added_tokens")) {
      for (const auto& a : tok["added_tokens"]) {
        if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string())
          throw InputError(file + ": an added_tokens entry without a whole-number id and a string content");
        const auto id = checked_id(a["id"], "added_tokens");
        if (id >= by_id.size()) {
          by_id.resize(id + 1);
          types.resize(id + 1, 1);
        }
        by_id[id] = a.at("content").get<std::string>();
        types[id] = a.value("special", false) ? 3 : 4;
      }
    }
    for (size_t i = 0; i < by_id.size(); ++i)
      if (by_id[i].empty()) {
        by_id[i] = fmt::format("[PAD{}]", i);
        types[i] = 5;
      }
    std::vector<std::string> merges;
    for (const auto& m : model.at("merges")) {
      if (m.is_string()) merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2) merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    }
    if (model.value("byte_fallback", false)) {
      // A SentencePiece-style tokenizer.json (Llama 2, Mistral): llama.cpp's SentencePiece vocabulary. Its tokenizer
      // merges the adjacent pair whose concatenation scores highest, so a token's score is minus the rank of the
      // first merge that makes it: llama.cpp then merges in the file's order. Byte tokens get type 6.
      v.model = "llama";
      v.pre = "default";
      std::unordered_map<std::string, size_t> index;
      for (size_t i = 0; i < by_id.size(); ++i) index.emplace(by_id[i], i);
      v.scores.assign(by_id.size(), 0.0f);
      std::vector<bool> scored(by_id.size(), false);
      for (size_t r = 0; r < merges.size(); ++r) {
        std::string joined = merges[r];
        joined.erase(joined.find(' '), 1);
        const auto it = index.find(joined);
        if (it != index.end() && !scored[it->second]) {
          v.scores[it->second] = -static_cast<float>(r);
          scored[it->second] = true;
        }
      }
      for (size_t i = 0; i < by_id.size(); ++i) {
        const std::string& t = by_id[i];
        if (types[i] == 1 && t.size() == 6 && t.starts_with("<0x") && t.back() == '>') types[i] = 6;
      }
      const json unk = model.contains("unk_token") ? model["unk_token"] : json();
      if (unk.is_string())
        if (const auto it = index.find(unk.get<std::string>()); it != index.end()) {
          types[it->second] = 2;
          v.unk = static_cast<uint32_t>(it->second);
        }
      const std::string dump = tok.contains("normalizer") ? tok["normalizer"].dump() : "";
      const std::string pre_dump = tok.contains("pre_tokenizer") ? tok["pre_tokenizer"].dump() : "";
      v.add_space_prefix = dump.find("Prepend") != std::string::npos ||
                           (pre_dump.find("Metaspace") != std::string::npos && pre_dump.find("\"never\"") == std::string::npos);
    } else {
      v.model = "gpt2";
      v.pre = pre_tokenizer_name(tok, arch);
      v.merges = std::move(merges);
    }
    v.tokens = std::move(by_id);
    v.types = std::move(types);
  } else {
    return std::nullopt;
  }
  pad_vocabulary(v, vocab_size);
  // Special tokens: generation_config, then config, then tokenizer_config's token strings.
  auto pick = [&](const char* key) {
    const auto g = json_id(gen_config, key);
    return g ? g : json_id(config, key);
  };
  if (auto id = pick("bos_token_id")) v.bos = id;
  if (auto id = pick("eos_token_id")) v.eos = id;
  if (auto id = pick("pad_token_id")) v.pad = id;
  if (tok_config) {
    const json& t = *tok_config;
    if (!v.bos && t.contains("bos_token")) v.bos = id_of(v.tokens, t["bos_token"]);
    if (!v.eos && t.contains("eos_token")) v.eos = id_of(v.tokens, t["eos_token"]);
    if (t.contains("unk_token")) {
      if (auto id = id_of(v.tokens, t["unk_token"])) v.unk = id;
    }
    if (!v.pad && t.contains("pad_token")) v.pad = id_of(v.tokens, t["pad_token"]);
    if (t.contains("add_bos_token") && t["add_bos_token"].is_boolean()) v.add_bos = t["add_bos_token"].get<bool>();
    if (t.contains("add_eos_token") && t["add_eos_token"].is_boolean()) v.add_eos = t["add_eos_token"].get<bool>();
    if (t.contains("chat_template")) {
      const json& ct = t["chat_template"];
      if (ct.is_string()) v.chat_template = ct.get<std::string>();
      else if (ct.is_array())
        for (const auto& e : ct)
          if (e.value("name", std::string()) == "default") v.chat_template = e.value("template", std::string());
    }
  }
  for (std::optional<uint32_t>* id : {&v.bos, &v.eos, &v.unk, &v.pad})
    if (*id && **id >= v.tokens.size()) id->reset();
  return v;
}

}  // namespace

void write_vocabulary_metadata(GgufWriter& w, const Vocabulary& v) {
  w.set("tokenizer.ggml.model", v.model);
  if (!v.pre.empty()) w.set("tokenizer.ggml.pre", v.pre);
  w.set("tokenizer.ggml.tokens", GgufValue::strings(v.tokens));
  if (!v.scores.empty()) w.set("tokenizer.ggml.scores", GgufValue::array(v.scores));
  w.set("tokenizer.ggml.token_type", GgufValue::array(v.types));
  if (!v.merges.empty()) w.set("tokenizer.ggml.merges", GgufValue::strings(v.merges));
  if (v.bos) w.set("tokenizer.ggml.bos_token_id", *v.bos);
  if (v.eos) w.set("tokenizer.ggml.eos_token_id", *v.eos);
  if (v.unk) w.set("tokenizer.ggml.unknown_token_id", *v.unk);
  if (v.pad) w.set("tokenizer.ggml.padding_token_id", *v.pad);
  if (v.add_bos) w.set("tokenizer.ggml.add_bos_token", *v.add_bos);
  if (v.add_eos) w.set("tokenizer.ggml.add_eos_token", *v.add_eos);
  if (v.add_space_prefix) w.set("tokenizer.ggml.add_space_prefix", *v.add_space_prefix);
  if (!v.chat_template.empty()) w.set("tokenizer.chat_template", v.chat_template);
}

void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  if (fs::absolute(from) == fs::absolute(to)) return;
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"})
    if (fs::exists(from / f)) fs::copy_file(from / f, to / f, fs::copy_options::overwrite_existing);
}

}  // namespace qz
