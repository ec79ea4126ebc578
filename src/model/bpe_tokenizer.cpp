// BPE from a Hugging Face tokenizer.json, both kinds:
// - byte-level (GPT-2, Llama 3, Qwen2/Qwen3): added tokens split out first, the normalizer's Unicode form (NFC for
//   Qwen: utf8proc), then the pre-tokenizer's regexes (PCRE2
//   with Unicode properties; Split "Isolated" and ByteLevel's GPT-2 pattern), each piece's bytes through GPT-2's
//   byte-to-unicode map, then merges by rank (or the whole piece when ignore_merges and it is in the vocabulary);
//   The same from a GGUF file's byte-level vocabulary (tokenizer.ggml.model = gpt2), with the pre-tokenizer's
//   regexes that llama.cpp gives its name;
// - SentencePiece-style (Llama 2, Mistral: byte_fallback): the normalizer's Prepend("▁") / Replace(" ", "▁") or a
//   Metaspace pre-tokenizer, merges by rank over UTF-8 characters, and characters outside the vocabulary as their
//   <0xXX> byte tokens.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <queue>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "qz/core/error.hpp"
#include "qz/model/byte_level.hpp"
#include "qz/model/text_tokenizer.hpp"

namespace qz {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// GPT-2's pre-tokenizer regex (ByteLevel with use_regex).
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

size_t utf8_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw InputError(fmt::format("{}: pre-tokenizer regex does not compile at offset {}: {}", where, offset,
                                   reinterpret_cast<const char*>(msg)));
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  // Split "Isolated": every match is a piece, and so is every stretch between matches.
  void split(const std::string& s, std::vector<std::string>& out) const {
    size_t at = 0, last = 0;
    while (at <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), at, 0, data_, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        throw InputError(fmt::format("text cannot be pre-tokenized: {}", reinterpret_cast<const char*>(msg)));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data_);
      const size_t b = ov[0], e = ov[1];
      if (b > last) out.push_back(s.substr(last, b - last));
      if (e > b) out.push_back(s.substr(b, e - b));
      last = e;
      at = e > b ? e : e + (e < s.size() ? utf8_length(static_cast<unsigned char>(s[e])) : 1);
    }
    if (last < s.size()) out.push_back(s.substr(last));
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

// The text in a Unicode normalization form, by utf8proc (its tables follow the Unicode version it was built with).
std::string unicode_normalize(const std::string& text, const std::string& form) {
  int options = UTF8PROC_STABLE | (form == "NFC" || form == "NFKC" ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
  if (form == "NFKC" || form == "NFKD") options |= UTF8PROC_COMPAT;
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &out,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) throw InputError(fmt::format("the text cannot be normalized to {}: {}", form, utf8proc_errmsg(n)));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

bool valid_utf8(const std::string& s, size_t* bad) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return *bad = i, false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return *bad = i, false;
    i += n;
  }
  return true;
}

// llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) for the byte-level vocabularies it reads, with the regexes
// it splits text by (in order) and whether a piece found whole in the vocabulary skips the merges (as llama.cpp's
// llama-vocab.cpp maps them).
struct GgufPreTokenizer {
  std::vector<std::string> names;
  std::vector<std::string> regexes;
  bool ignore_merges = false;
};

constexpr const char* kLlama3Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const std::vector<GgufPreTokenizer>& gguf_pre_tokenizers() {
  static const std::vector<GgufPreTokenizer> table = {
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral"}, {kLlama3Pattern}, true},
      {{"dbrx", "smaug-bpe"}, {kLlama3Pattern}, false},
      {{"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2", "hunyuan"}, {kQwen2Pattern}, false},
      {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"}, {kGpt2Pattern}, false},
      {{"default"},
       {R"([\p{P}\$\+<=>\^~\|]+)", R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))",
        R"(\p{N}+)", "[0-9][0-9][0-9]"},
       false},
  };
  return table;
}

class ByteLevelBpe final : public TextTokenizer {
 public:
  // llama.cpp's byte-level vocabulary as a GGUF file stores it: tokens by id, merges "a b" by rank (split at the
  // first space after the first byte, as llama.cpp splits them), the pre-tokenizer by name. Only user-defined tokens
  // (type 4) are split out of the text before the regexes: llama.cpp's tokenizer leaves control tokens' text as text
  // (llama-perplexity and llama-imatrix tokenize with parse_special off).
  ByteLevelBpe(const GgufBpeVocabulary& v, const fs::path& file) : where_(file.string()) {
    pieces_ = v.tokens;
    for (size_t i = 0; i < v.tokens.size(); ++i) {
      vocab_[v.tokens[i]] = static_cast<int32_t>(i);
      if (i < v.types.size() && v.types[i] == 4) added_.push_back({v.tokens[i], static_cast<int32_t>(i)});
    }
    std::sort(added_.begin(), added_.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    int rank = 0;
    for (const std::string& m : v.merges) {
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) throw InputError(fmt::format("{}: tokenizer.ggml.merges[{}] '{}' is not 'a b'", where_, rank, m));
      ranks_.emplace(m.substr(0, sp) + '\x1f' + m.substr(sp + 1), rank++);
    }
    const std::string pre = v.pre.empty() ? "default" : v.pre;  // llama.cpp's choice for a file without one
    const auto& table = gguf_pre_tokenizers();
    const auto it = std::find_if(table.begin(), table.end(), [&](const GgufPreTokenizer& p) {
      return std::find(p.names.begin(), p.names.end(), pre) != p.names.end();
    });
    if (it == table.end())
      throw UsageError(fmt::format("{}: its pre-tokenizer '{}' (tokenizer.ggml.pre) does not encode text here: give "
                                   "--tokenizer CHECKPOINT_DIR or --tokens FILE",
                                   where_, pre));
    for (const std::string& re : it->regexes) regexes_.push_back(std::make_unique<Regex>(re, where_));
    ignore_merges_ = it->ignore_merges;
    byte_level_ = true;
  }

  ByteLevelBpe(const json& tok, const fs::path& file) : where_(file.string()) {
    const json& model = tok.at("model");
    if (!model.contains("vocab") || !model["vocab"].is_object()) throw InputError(where_ + ": model.vocab is missing or not an object");
    if (!model.contains("merges") || !model["merges"].is_array()) throw InputError(where_ + ": model.merges is missing or not a list");
    const size_t bound = model["vocab"].size() + (tok.contains("added_tokens") && tok["added_tokens"].is_array() ? tok["added_tokens"].size() : 0);
    auto checked_id = [&](const json& v, const std::string& where) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || static_cast<uint64_t>(v.get<int64_t>()) >= bound)
        throw InputError(fmt::format("{}: {}: id {} is not a token id (a whole number from 0 to {})", where_, where, v.dump(),
                                     bound - 1));
      return static_cast<int32_t>(v.get<int64_t>());
    };
    for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) {
      const auto id = checked_id(it.value(), "model.vocab[\"" + it.key() + "\"]");
      vocab_[it.key()] = id;
      if (static_cast<size_t>(id) >= pieces_.size()) pieces_.resize(static_cast<size_t>(id) + 1);
      pieces_[static_cast<size_t>(id)] = it.key();
    }
    int rank = 0;
    for (const auto& m : model.at("merges")) {
      std::string a, b;
      if (m.is_array()) {
        a = m.at(0).get<std::string>();
        b = m.at(1).get<std::string>();
      } else {
        const std::string s = m.get<std::string>();
        const auto sp = s.find(' ');
        if (sp == std::string::npos) throw InputError(where_ + ": merge '" + s + "' is not 'a b'");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      }
      ranks_.emplace(a + '\x1f' + b, rank++);
    }
    ignore_merges_ = model.value("ignore_merges", false);
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const auto it = vocab_.find(model["unk_token"].get<std::string>());
      if (it != vocab_.end()) unk_ = it->second;
    }
    if (tok.contains("added_tokens"))
      for (const auto& a : tok["added_tokens"]) {
        if (!a.is_object() || !a.contains("id")) throw InputError(where_ + ": an added_tokens entry without an id");
        const auto id = checked_id(a["id"], "added_tokens");
        added_.push_back({a.at("content").get<std::string>(), id});
        if (static_cast<size_t>(id) >= pieces_.size()) pieces_.resize(static_cast<size_t>(id) + 1);
        pieces_[static_cast<size_t>(id)] = added_.back().first;
      }
    std::sort(added_.begin(), added_.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    byte_fallback_ = model.value("byte_fallback", false);
    add_normalizer(tok.contains("normalizer") ? tok["normalizer"] : json());
    add_pre_tokenizer(tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : json());
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    size_t bad = 0;
    if (!valid_utf8(text, &bad)) throw InputError(fmt::format("the text is not valid UTF-8 at byte {}", bad));
    std::vector<int32_t> ids;
    // Added tokens are matched literally, longest first, before anything else.
    size_t at = 0, start = 0;
    while (at < text.size()) {
      const auto hit = std::find_if(added_.begin(), added_.end(),
                                    [&](const auto& a) { return text.compare(at, a.first.size(), a.first) == 0; });
      if (hit == added_.end()) {
        ++at;
        continue;
      }
      encode_plain(text.substr(start, at - start), ids);
      ids.push_back(hit->second);
      at += hit->first.size();
      start = at;
    }
    encode_plain(text.substr(start), ids);
    return ids;
  }
  std::string piece(int32_t id) const override {
    return id >= 0 && static_cast<size_t>(id) < pieces_.size() ? pieces_[static_cast<size_t>(id)] : std::string();
  }
  size_t vocab_size() const override { return pieces_.size(); }

 private:
  void add_normalizer(const json& n) {
    if (n.is_null()) return;
    const std::string type = n.value("type", "");
    if (type == "Sequence") {
      for (const auto& m : n.at("normalizers")) add_normalizer(m);
    } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
      if (!replaces_.empty() || !prepend_.empty())
        throw UsageError(fmt::format("{}: a Unicode normalizer after Replace or Prepend is not supported", where_));
      unicode_form_ = type;
    } else if (type == "Prepend") {
      prepend_ = n.at("prepend").get<std::string>();
    } else if (type == "Replace" && n.at("pattern").contains("String")) {
      replaces_.emplace_back(n["pattern"]["String"].get<std::string>(), n.at("content").get<std::string>());
    } else {
      throw UsageError(fmt::format("{}: normalizer '{}' is not supported", where_, type));
    }
  }

  void add_pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    const std::string type = p.value("type", "");
    if (type == "Metaspace") {
      const std::string rep = p.value("replacement", std::string("\xe2\x96\x81"));
      replaces_.emplace_back(" ", rep);
      const std::string scheme = p.value("prepend_scheme", std::string(p.value("add_prefix_space", true) ? "always" : "never"));
      if (scheme != "never") prepend_ = rep;
      if (p.value("split", false)) metaspace_split_ = rep;
    } else if (type == "Sequence") {
      for (const auto& q : p.at("pretokenizers")) add_pre_tokenizer(q);
    } else if (type == "Split") {
      if (p.value("behavior", "") != "Isolated" || p.value("invert", false) || !p.at("pattern").contains("Regex"))
        throw UsageError(where_ + ": only Split pre-tokenizers with a Regex, behavior Isolated, not inverted, are supported");
      regexes_.push_back(std::make_unique<Regex>(p["pattern"]["Regex"].get<std::string>(), where_));
    } else if (type == "ByteLevel") {
      byte_level_ = true;
      if (p.value("add_prefix_space", false)) prefix_space_ = true;
      if (p.value("use_regex", true)) regexes_.push_back(std::make_unique<Regex>(kGpt2Pattern, where_));
    } else {
      throw UsageError(fmt::format("{}: pre-tokenizer '{}' is not supported", where_, type));
    }
  }

  void encode_plain(const std::string& input, std::vector<int32_t>& ids) const {
    if (input.empty()) return;
    const std::string raw = unicode_form_.empty() ? input : unicode_normalize(input, unicode_form_);
    std::string text = prefix_space_ && raw[0] != ' ' ? " " + raw : raw;
    for (const auto& [from, to] : replaces_) text = replace_all(text, from, to);
    if (!prepend_.empty()) text = prepend_ + text;
    std::vector<std::string> pieces = {text};
    for (const auto& re : regexes_) {
      std::vector<std::string> next;
      for (const auto& p : pieces) re->split(p, next);
      pieces = std::move(next);
    }
    if (!metaspace_split_.empty()) {  // Metaspace with split: a piece starts at every replacement character
      std::vector<std::string> next;
      for (const auto& p : pieces)
        for (size_t at = 0; at < p.size();) {
          size_t end = p.find(metaspace_split_, at + 1);
          if (end == std::string::npos) end = p.size();
          next.push_back(p.substr(at, end - at));
          at = end;
        }
      pieces = std::move(next);
    }
    for (const auto& p : pieces) {
      if (!byte_level_) {
        bpe(p, ids);
        continue;
      }
      std::string mapped;
      for (const unsigned char c : p) mapped += gpt2_byte_chars()[c];
      bpe(mapped, ids);
    }
  }

  static std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    std::string out;
    for (size_t at = 0;;) {
      const size_t hit = s.find(from, at);
      out.append(s, at, hit == std::string::npos ? std::string::npos : hit - at);
      if (hit == std::string::npos) return out;
      out += to;
      at = hit + from.size();
    }
  }

  // Merges by rank: repeatedly the adjacent pair of lowest rank, leftmost among equals, until none is a merge.
  // Symbols form a linked list and candidate pairs a heap, so a whole SentencePiece-style text (one piece) takes
  // O(n log n).
  void bpe(const std::string& word, std::vector<int32_t>& ids) const {
    if (ignore_merges_)
      if (const auto it = vocab_.find(word); it != vocab_.end()) return ids.push_back(it->second);
    std::vector<std::string> sym;
    for (size_t i = 0; i < word.size();) {
      const size_t n = utf8_length(static_cast<unsigned char>(word[i]));
      sym.push_back(word.substr(i, n));
      i += n;
    }
    const size_t n = sym.size();
    std::vector<size_t> next(n), prev(n);
    std::vector<bool> alive(n, true);
    for (size_t i = 0; i < n; ++i) {
      next[i] = i + 1;
      prev[i] = i == 0 ? SIZE_MAX : i - 1;
    }
    struct Cand {
      int rank;
      size_t left;
      size_t left_len, right_len;  // the symbols' lengths when queued, to drop stale entries
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap;
    auto push = [&](size_t l) {
      if (l == SIZE_MAX || next[l] >= n) return;
      const auto it = ranks_.find(sym[l] + '\x1f' + sym[next[l]]);
      if (it != ranks_.end()) heap.push({it->second, l, sym[l].size(), sym[next[l]].size()});
    };
    for (size_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const size_t r = next[c.left];
      if (!alive[c.left] || r >= n || sym[c.left].size() != c.left_len || sym[r].size() != c.right_len) continue;
      sym[c.left] += sym[r];
      alive[r] = false;
      next[c.left] = next[r];
      if (next[r] < n) prev[next[r]] = c.left;
      push(prev[c.left]);
      push(c.left);
    }
    for (size_t i = 0; i < n; i = next[i]) emit(sym[i], ids);
  }

  void emit(const std::string& s, std::vector<int32_t>& ids) const {
    if (const auto it = vocab_.find(s); it != vocab_.end()) return ids.push_back(it->second);
    if (byte_fallback_) {
      bool all = true;
      std::vector<int32_t> bytes;
      for (const unsigned char c : s) {
        const auto it = vocab_.find(fmt::format("<0x{:02X}>", c));
        if (it == vocab_.end()) {
          all = false;
          break;
        }
        bytes.push_back(it->second);
      }
      if (all) return ids.insert(ids.end(), bytes.begin(), bytes.end()), void();
    }
    if (unk_) return ids.push_back(*unk_);
    throw InputError(
        fmt::format("{}: '{}' is neither in the vocabulary nor mergeable, and there is no unk_token", where_, s));
  }

  std::string where_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<std::string, int> ranks_;
  std::vector<std::string> pieces_;
  std::vector<std::pair<std::string, int32_t>> added_;  // longest first
  std::vector<std::unique_ptr<Regex>> regexes_;
  std::vector<std::pair<std::string, std::string>> replaces_;  // normalizer Replace / Metaspace, in order
  std::string unicode_form_;     // normalizer NFC / NFD / NFKC / NFKD, empty for none
  std::string prepend_;          // normalizer Prepend / Metaspace prepend
  std::string metaspace_split_;  // Metaspace with split: pieces start at this
  std::optional<int32_t> unk_;
  bool ignore_merges_ = false;
  bool prefix_space_ = false;
  bool byte_level_ = false;
  bool byte_fallback_ = false;
};

}  // namespace

std::unique_ptr<TextTokenizer> make_gguf_bpe_tokenizer(const GgufBpeVocabulary& vocabulary, const fs::path& gguf) {
  return std::make_unique<ByteLevelBpe>(vocabulary, gguf);
}

std::unique_ptr<TextTokenizer> make_bpe_tokenizer(const fs::path& file) {
  std::ifstream f(file);
  if (!f) throw InputError(file.string() + ": cannot read");
  json tok;
  try {
    tok = json::parse(f);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: not valid JSON: {}", file.string(), e.what()));
  }
  if (!tok.contains("model") || tok["model"].value("type", "") != "BPE")
    throw UsageError(file.string() + ": only BPE tokenizer.json models are supported");
  try {
    return std::make_unique<ByteLevelBpe>(tok, file);
  } catch (const json::exception& e) {  // a key of the wrong JSON type
    throw InputError(fmt::format("{}: {}", file.string(), e.what()));
  }
}

}  // namespace qz
