// Text to token ids, as the model's own tokenizer encodes it:
// - `tokenizer.model` (SentencePiece) by the SentencePiece library itself (libsentencepiece), with the model's own
//   normalizer and dummy-prefix settings;
// - a byte-level BPE `tokenizer.json` (GPT-2, Llama 3, Qwen2/Qwen3; bpe_tokenizer.cpp): added tokens, the
//   pre-tokenizer's regexes through PCRE2 with Unicode properties, GPT-2's byte-to-unicode map, merges by rank.
//   Its Unicode normalizer (NFC for Qwen; NFD, NFKC, NFKD) through utf8proc, as Hugging Face applies it;
// - a GGUF file's byte-level vocabulary (gpt2) as llama.cpp encodes it, the same BPE with llama.cpp's regexes and,
//   as llama.cpp, no normalizer.
// The special tokens (BOS and whether it is added) come from the checkpoint's configs, as read_vocabulary reads them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qz {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;
  // The ids of `text`, without BOS.
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // The piece of a token id, as the vocabulary spells it ("▁the", "<0x0A>").
  virtual std::string piece(int32_t id) const = 0;
  virtual size_t vocab_size() const = 0;
  // The ids a model reads for `text`: BOS first when the tokenizer's config says the model adds it.
  std::vector<int32_t> encode_for_model(const std::string& text) const;
  std::optional<int32_t> bos;
  bool add_bos = true;
};

std::unique_ptr<TextTokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& tokenizer_model);
std::unique_ptr<TextTokenizer> make_bpe_tokenizer(const std::filesystem::path& tokenizer_json);

// The tokenizer of a checkpoint directory (tokenizer.model first, as llama.cpp's converter prefers it). Throws InputError naming the file when it cannot be read, UsageError
// when the directory has no tokenizer the engine encodes.
std::unique_ptr<TextTokenizer> open_text_tokenizer(const std::filesystem::path& dir);

// llama.cpp's byte-level BPE vocabulary (tokenizer.ggml.model = gpt2) as a GGUF file stores it.
struct GgufBpeVocabulary {
  std::vector<std::string> tokens;  // tokenizer.ggml.tokens, by id
  std::vector<int32_t> types;       // tokenizer.ggml.token_type (4: user-defined, split out of the text first)
  std::vector<std::string> merges;  // tokenizer.ggml.merges, "a b" by rank
  std::string pre;                  // tokenizer.ggml.pre: the pre-tokenizer, by llama.cpp's name for it
};
// Encodes as llama.cpp's tokenizer does on that file. Throws UsageError for a pre-tokenizer name it does not know.
std::unique_ptr<TextTokenizer> make_gguf_bpe_tokenizer(const GgufBpeVocabulary& vocabulary, const std::filesystem::path& gguf);

// The tokenizer a GGUF model file carries: llama.cpp's SentencePiece vocabulary (tokenizer.ggml.model = llama:
// tokens, scores, types, add_space_prefix, BOS) run through libsentencepiece, or its byte-level BPE vocabulary
// (gpt2: tokens, types, merges, pre). Throws UsageError for other vocabularies, InputError for malformed keys.
std::unique_ptr<TextTokenizer> open_gguf_tokenizer(const std::filesystem::path& gguf);

}  // namespace qz
