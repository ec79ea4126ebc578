// Calibration from text (docs/calibration.md): what `--calib FILE` holds is decided by the file, and text becomes
// the token windows the engine runs.
//  - `.safetensors`: activations or Hessians per linear (calibration_set.hpp), used as they are;
//  - `.txt`: plain text, one document;
//  - `.jsonl`: one JSON object per line with a "text" field, each a document;
//  - `.json`: a list of strings (documents), or a list of token-id lists (documents already tokenized).
// Each document is encoded on its own without BOS (a leading BOS of a token list is dropped) and the documents are
// joined into one token stream. The stream is cut into consecutive windows of seqlen - 1 tokens; `samples` of them
// are drawn without replacement with a fixed seed (xorshift64, the same picks on every machine), and each gets BOS
// first. Windows never overlap, so no token is counted twice. A stream shorter than samples x (seqlen - 1) tokens
// gives every window it has (the last one shorter), with a warning that says how many tokens were used.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace qz {

class TextTokenizer;

enum class CalibKind { Activations, Text, JsonLines, JsonStrings, JsonTokens };
// "activations", "text", "jsonl", "json strings", "json token ids".
std::string calib_kind_name(CalibKind k);
// By the file's extension, and for .json by its first element (the file is read and parsed). Throws InputError naming
// the file for a .json that is neither, UsageError for an extension none of the kinds has.
CalibKind calibration_kind(const std::filesystem::path& file);
// Whether the file is text of some kind rather than activations, by its extension alone (nothing is read); throws
// UsageError as calibration_kind does for an unknown extension.
bool is_text_calibration(const std::filesystem::path& file);

// The documents of a text calibration file as token ids (without BOS). `tokenizer` encodes text kinds (it may be
// null for token-id lists). Throws InputError naming the file (and line or element) for malformed content, an
// empty file and, when vocab_size > 0, a token id outside the vocabulary.
std::vector<std::vector<int32_t>> read_calibration_documents(const std::filesystem::path& file, const TextTokenizer* tokenizer,
                                                             std::optional<int32_t> bos, size_t vocab_size);
// The same when the file's kind is already known (a .json is then parsed once).
std::vector<std::vector<int32_t>> read_calibration_documents(const std::filesystem::path& file, CalibKind kind,
                                                             const TextTokenizer* tokenizer, std::optional<int32_t> bos,
                                                             size_t vocab_size);

struct CalibSampling {
  size_t samples = 128;  // --calib-samples
  size_t seqlen = 512;   // --calib-seqlen, BOS included
  uint64_t seed = 0;     // --calib-seed
};

struct CalibSamples {
  std::vector<std::vector<int32_t>> sequences;  // each BOS first (when the model has one)
  uint64_t stream_tokens = 0;                   // tokens of all documents
  std::string warning;                          // fewer tokens than asked, with the count used
  uint64_t tokens() const {
    uint64_t n = 0;
    for (const auto& s : sequences) n += s.size();
    return n;
  }
};

// Draws the windows (see the top of this file). Throws InputError when the documents hold no token.
CalibSamples draw_calibration_samples(const std::vector<std::vector<int32_t>>& documents, std::optional<int32_t> bos,
                                      const CalibSampling& how);

}  // namespace qz
