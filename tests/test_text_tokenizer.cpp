// Encoding text: SentencePiece through the library, BOS from the configs. Truths: hand-derived merges on a tiny
// vocabulary, and llama2.c's own token ids for the stories260K evaluation text (../shared).
#include <gtest/gtest.h>

#include <fstream>

#include "qz/core/error.hpp"
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
