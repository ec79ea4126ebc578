// Tokenizers into llama.cpp's GGUF vocabulary keys:
// - SentencePiece tokenizer.model (a protobuf ModelProto: field 1 = pieces, each with piece (1), score (2),
//   type (3)) -> tokenizer.ggml.model = "llama", tokens, scores, token types (1 normal, 2 unknown, 3 control,
//   4 user-defined, 5 unused, 6 byte);
// - Hugging Face tokenizer.json with a byte-level BPE model -> tokenizer.ggml.model = "gpt2", tokens, merges,
//   token types and a pre-tokenizer name;
// plus bos/eos/unk/pad ids and add_bos/add_eos from tokenizer_config.json, generation_config.json and config.json,
// and the chat template when present.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace qz {

class GgufWriter;

struct Vocabulary {
  std::string model;  // "llama" or "gpt2"
  std::string pre;    // pre-tokenizer name ("llama-bpe", "qwen2", "default"; "default" for SentencePiece)
  std::vector<std::string> tokens;
  std::vector<float> scores;     // SentencePiece only
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // BPE only
  std::optional<uint32_t> bos, eos, unk, pad;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::string chat_template;
};

struct SentencePiece {
  std::string piece;
  float score = 0.0f;
  int32_t type = 1;
};

// Parses a SentencePiece model file (InputError naming the file on malformed protobuf).
std::vector<SentencePiece> read_sentencepiece(const std::filesystem::path& file, bool* add_dummy_prefix = nullptr);
// A SentencePiece model of these pieces: BPE with byte fallback and the identity normalizer with a dummy prefix,
// as llama.cpp's SentencePiece vocabularies are (the demo checkpoint's tokenizer.model).
void write_sentencepiece(const std::filesystem::path& file, const std::vector<SentencePiece>& pieces);
// The same model as bytes (a serialized ModelProto), with or without SentencePiece's dummy prefix.
std::string sentencepiece_model_bytes(const std::vector<SentencePiece>& pieces, bool add_dummy_prefix);

// Reads the tokenizer of a checkpoint directory; nullopt when it has neither tokenizer.model nor tokenizer.json.
// `vocab_size` (from config.json, 0 if unknown) pads the token list the way llama.cpp's converter does.
std::optional<Vocabulary> read_vocabulary(const std::filesystem::path& dir, const std::string& gguf_arch,
                                          uint32_t vocab_size);

void write_vocabulary_metadata(GgufWriter& w, const Vocabulary& v);

// Copies a Hugging Face checkpoint's tokenizer and generation files (tokenizer.model, tokenizer.json,
// tokenizer_config.json, special_tokens_map.json, generation_config.json) that `from` has into `to` (a checkpoint
// written beside it: --output-format gptq / bnb). Nothing when the two are the same directory.
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace qz
