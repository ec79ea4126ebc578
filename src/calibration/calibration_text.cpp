#include "qz/calibration/calibration_text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "qz/core/error.hpp"
#include "qz/core/random.hpp"
#include "qz/model/text_tokenizer.hpp"

namespace qz {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_all(const fs::path& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) throw InputError(file.string() + ": cannot read the calibration file");
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

json parse_json(const std::string& text, const fs::path& file, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}{}: not valid JSON: {}", file.string(), where, e.what()));
  }
}

const TextTokenizer& need_tokenizer(const TextTokenizer* t, const fs::path& file) {
  if (t == nullptr)
    throw UsageError(file.string() + ": calibration text needs the model's tokenizer (tokenizer.model or tokenizer.json "
                                     "beside config.json), and the model has none");
  return *t;
}

}  // namespace

std::string calib_kind_name(CalibKind k) {
  switch (k) {
    case CalibKind::Activations: return "activations";
    case CalibKind::Text: return "text";
    case CalibKind::JsonLines: return "jsonl";
    case CalibKind::JsonStrings: return "json strings";
    case CalibKind::JsonTokens: return "json token ids";
  }
  return "?";
}

bool is_text_calibration(const fs::path& file) {
  const std::string ext = file.extension().string();
  if (ext == ".safetensors") return false;
  if (ext == ".txt" || ext == ".text" || ext == ".md" || ext == ".jsonl" || ext == ".json") return true;
  throw UsageError(fmt::format("--calib {}: unknown kind of file '{}': give activations (.safetensors), text (.txt), "
                               "JSON lines with a \"text\" field (.jsonl), or a .json list of strings or token-id lists",
                               file.string(), ext));
}

CalibKind calibration_kind(const fs::path& file) {
  if (!is_text_calibration(file)) return CalibKind::Activations;
  const std::string ext = file.extension().string();
  if (ext == ".jsonl") return CalibKind::JsonLines;
  if (ext == ".json") {
    const json j = parse_json(read_all(file), file, "");
    if (!j.is_array() || j.empty())
      throw InputError(file.string() + ": a .json calibration file is a non-empty list of strings or of token-id lists");
    if (j.front().is_string()) return CalibKind::JsonStrings;
    if (j.front().is_array()) return CalibKind::JsonTokens;
    throw InputError(fmt::format("{}: element 0 is a JSON {}: expected a string or a list of token ids", file.string(),
                                 j.front().type_name()));
  }
  return CalibKind::Text;
}

std::vector<std::vector<int32_t>> read_calibration_documents(const fs::path& file, const TextTokenizer* tokenizer,
                                                             std::optional<int32_t> bos, size_t vocab_size) {
  return read_calibration_documents(file, calibration_kind(file), tokenizer, bos, vocab_size);
}

std::vector<std::vector<int32_t>> read_calibration_documents(const fs::path& file, CalibKind kind,
                                                             const TextTokenizer* tokenizer, std::optional<int32_t> bos,
                                                             size_t vocab_size) {
  std::vector<std::vector<int32_t>> docs;
  const std::string bytes = read_all(file);
  switch (kind) {
    case CalibKind::Activations:
      throw std::logic_error("read_calibration_documents: an activation file");
    case CalibKind::Text: {
      std::string text = bytes;
      if (!text.empty() && text.back() == '\n') text.pop_back();
      docs.push_back(need_tokenizer(tokenizer, file).encode(text));
      break;
    }
    case CalibKind::JsonLines: {
      std::istringstream in(bytes);
      std::string line;
      for (size_t n = 1; std::getline(in, line); ++n) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const json j = parse_json(line, file, fmt::format(":{}", n));
        if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
          throw InputError(fmt::format("{}:{}: expected an object with a string \"text\" field", file.string(), n));
        docs.push_back(need_tokenizer(tokenizer, file).encode(j["text"].get<std::string>()));
      }
      break;
    }
    case CalibKind::JsonStrings:
    case CalibKind::JsonTokens: {
      const json j = parse_json(bytes, file, "");
      for (size_t i = 0; i < j.size(); ++i) {
        const json& e = j[i];
        if (kind == CalibKind::JsonStrings) {
          if (!e.is_string())
            throw InputError(fmt::format("{}: element {} is a JSON {}, not a string like element 0", file.string(), i, e.type_name()));
          docs.push_back(need_tokenizer(tokenizer, file).encode(e.get<std::string>()));
          continue;
        }
        if (!e.is_array())
          throw InputError(fmt::format("{}: element {} is a JSON {}, not a token-id list like element 0", file.string(), i, e.type_name()));
        std::vector<int32_t> ids;
        for (size_t k = 0; k < e.size(); ++k) {
          const json& v = e[k];
          if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
              (vocab_size > 0 && v.get<int64_t>() >= static_cast<int64_t>(vocab_size)))
            throw InputError(fmt::format("{}: element {}, token {}: {} is not a token id of the model's vocabulary of {}",
                                         file.string(), i, k, v.dump(), vocab_size));
          ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
        }
        if (bos && !ids.empty() && ids.front() == *bos) ids.erase(ids.begin());
        docs.push_back(std::move(ids));
      }
      break;
    }
  }
  size_t total = 0;
  for (const auto& d : docs) total += d.size();
  if (total == 0) throw InputError(file.string() + ": the calibration file holds no text");
  return docs;
}

CalibSamples draw_calibration_samples(const std::vector<std::vector<int32_t>>& documents, std::optional<int32_t> bos,
                                      const CalibSampling& how) {
  if (how.samples == 0 || how.seqlen < 2) throw UsageError("--calib-samples must be at least 1 and --calib-seqlen at least 2");
  std::vector<int32_t> stream;
  for (const auto& d : documents) stream.insert(stream.end(), d.begin(), d.end());
  CalibSamples out;
  out.stream_tokens = stream.size();
  if (stream.empty()) throw InputError("the calibration text holds no token");
  const size_t body = bos ? how.seqlen - 1 : how.seqlen;  // tokens of the stream per window
  const size_t windows = (stream.size() + body - 1) / body;  // the last may be shorter
  std::vector<size_t> pick(windows);
  std::iota(pick.begin(), pick.end(), size_t{0});
  if (windows > how.samples) {
    // A partial Fisher-Yates shuffle with our own generator: the same windows on every machine and library.
    XorShift64 rng(0x9E3779B97F4A7C15ull ^ (how.seed * 0xBF58476D1CE4E5B9ull + 1));
    for (size_t i = 0; i < how.samples; ++i) {
      const size_t j = i + static_cast<size_t>(rng.next() % (windows - i));
      std::swap(pick[i], pick[j]);
    }
    pick.resize(how.samples);
    std::sort(pick.begin(), pick.end());
  }
  for (const size_t w : pick) {
    std::vector<int32_t> seq;
    if (bos) seq.push_back(*bos);
    const size_t a = w * body, b = std::min(stream.size(), a + body);
    seq.insert(seq.end(), stream.begin() + static_cast<std::ptrdiff_t>(a), stream.begin() + static_cast<std::ptrdiff_t>(b));
    if (seq.size() >= 2) out.sequences.push_back(std::move(seq));
  }
  if (out.sequences.empty()) throw InputError("the calibration text holds too few tokens for one window");
  const uint64_t asked = static_cast<uint64_t>(how.samples) * how.seqlen;
  if (out.tokens() < asked)
    out.warning = fmt::format("the calibration text has {} tokens, fewer than the {} x {} = {} asked: using {} windows, "
                              "{} tokens",
                              out.stream_tokens, how.samples, how.seqlen, asked, out.sequences.size(), out.tokens());
  return out;
}

}  // namespace qz
