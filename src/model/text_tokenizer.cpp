#include "qz/model/text_tokenizer.hpp"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include "qz/core/error.hpp"
#include "qz/model/tokenizer.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

class SentencePieceTokenizer final : public TextTokenizer {
 public:
  explicit SentencePieceTokenizer(const fs::path& file) : file_(file) {
    const auto status = sp_.Load(file.string());
    if (!status.ok())
      throw InputError(fmt::format("{}: SentencePiece cannot load this model: {}", file.string(), status.ToString()));
  }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) throw InputError(fmt::format("{}: cannot encode the text: {}", file_.string(), status.ToString()));
    return {ids.begin(), ids.end()};
  }
  std::string piece(int32_t id) const override { return sp_.IdToPiece(id); }
  size_t vocab_size() const override { return static_cast<size_t>(sp_.GetPieceSize()); }

 private:
  fs::path file_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::vector<int32_t> TextTokenizer::encode_for_model(const std::string& text) const {
  std::vector<int32_t> ids;
  if (add_bos && bos) ids.push_back(*bos);
  const std::vector<int32_t> body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::unique_ptr<TextTokenizer> make_sentencepiece_tokenizer(const fs::path& tokenizer_model) {
  return std::make_unique<SentencePieceTokenizer>(tokenizer_model);
}

std::unique_ptr<TextTokenizer> open_text_tokenizer(const fs::path& dir) {
  std::unique_ptr<TextTokenizer> t;
  if (fs::exists(dir / "tokenizer.model")) t = make_sentencepiece_tokenizer(dir / "tokenizer.model");
  else if (fs::exists(dir / "tokenizer.json")) t = make_bpe_tokenizer(dir / "tokenizer.json");
  else throw UsageError(fmt::format("{}: no tokenizer.model or tokenizer.json", dir.string()));
  // BOS and whether it is added: the same reading of the configs as the GGUF vocabulary (tokenizer.hpp).
  if (const std::optional<Vocabulary> v = read_vocabulary(dir, "llama", 0)) {
    if (v->bos) t->bos = static_cast<int32_t>(*v->bos);
    t->add_bos = v->add_bos.value_or(true);
  }
  return t;
}

}  // namespace qz
