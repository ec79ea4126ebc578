#include "qz/model/text_tokenizer.hpp"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"
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
  SentencePieceTokenizer(const std::string& model_proto, const fs::path& from) : file_(from) {
    const auto status = sp_.LoadFromSerializedProto(model_proto);
    if (!status.ok())
      throw InputError(fmt::format("{}: SentencePiece cannot load its vocabulary: {}", from.string(), status.ToString()));
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

std::unique_ptr<TextTokenizer> open_gguf_tokenizer(const fs::path& gguf) {
  const GgufFile f(gguf);
  auto str = [&](const char* key) -> std::string {
    const GgufValue* v = f.find(key);
    return v && v->get_if<std::string>() ? *v->get_if<std::string>() : std::string();
  };
  const std::string model = str("tokenizer.ggml.model");
  if (model != "llama" && model != "gpt2")
    throw UsageError(fmt::format("{}: its vocabulary ({}) does not encode text here (llama.cpp's SentencePiece and "
                                 "byte-level BPE vocabularies, \"llama\" and \"gpt2\", do): give --tokenizer "
                                 "CHECKPOINT_DIR or --tokens FILE",
                                 gguf.string(), model.empty() ? "none" : model));
  // An array of one element type, as values of type T; empty when the key is absent.
  auto array_of = [&]<typename T>(const char* key, T) {
    std::vector<T> out;
    const GgufValue* v = f.find(key);
    if (v == nullptr) return out;
    const GgufArray* a = v->get_if<GgufArray>();
    if (a == nullptr) throw InputError(fmt::format("{}: {} is not an array", gguf.string(), key));
    for (const auto& item : a->items) {
      const T* x = item.get_if<T>();
      if (x == nullptr) throw InputError(fmt::format("{}: {} holds a value of the wrong type", gguf.string(), key));
      out.push_back(*x);
    }
    return out;
  };
  const auto tv = array_of("tokenizer.ggml.tokens", std::string());
  const auto sv = array_of("tokenizer.ggml.scores", 0.0f);
  const auto yv = array_of("tokenizer.ggml.token_type", int32_t{0});
  if (tv.empty()) throw InputError(gguf.string() + ": tokenizer.ggml.tokens is missing or empty");
  if ((!sv.empty() && sv.size() != tv.size()) || (!yv.empty() && yv.size() != tv.size()))
    throw InputError(gguf.string() + ": tokenizer.ggml.scores / token_type do not have one entry per token");
  std::unique_ptr<TextTokenizer> t;
  if (model == "gpt2") {
    GgufBpeVocabulary v;
    v.tokens = tv;
    v.types = yv;
    v.merges = array_of("tokenizer.ggml.merges", std::string());
    if (v.merges.empty()) throw InputError(gguf.string() + ": tokenizer.ggml.merges is missing or empty");
    v.pre = str("tokenizer.ggml.pre");
    t = make_gguf_bpe_tokenizer(v, gguf);
    // llama.cpp adds BOS to a byte-level vocabulary only for the pre-tokenizers that say so (Llama 3's), unless the
    // file's add_bos_token says otherwise.
    t->add_bos = v.pre == "llama3" || v.pre == "llama-v3" || v.pre == "llama-bpe" || v.pre == "falcon3" ||
                 v.pre == "falcon-h1" || v.pre == "pixtral";
  } else {
    std::vector<SentencePiece> pieces;
    for (size_t i = 0; i < tv.size(); ++i)
      pieces.push_back({tv[i], sv.empty() ? 0.0f : sv[i], yv.empty() ? 1 : yv[i]});
    bool dummy = true;
    if (const GgufValue* v = f.find("tokenizer.ggml.add_space_prefix"))
      if (const auto* b = v->get_if<bool>()) dummy = *b;
    t = std::make_unique<SentencePieceTokenizer>(sentencepiece_model_bytes(pieces, dummy), gguf);
    t->add_bos = true;  // llama.cpp's default for SentencePiece vocabularies
  }
  if (const GgufValue* v = f.find("tokenizer.ggml.bos_token_id"))
    if (const auto* id = v->get_if<uint32_t>()) t->bos = static_cast<int32_t>(*id);
  if (const GgufValue* v = f.find("tokenizer.ggml.add_bos_token"))
    if (const auto* b = v->get_if<bool>()) t->add_bos = *b;
  return t;
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
