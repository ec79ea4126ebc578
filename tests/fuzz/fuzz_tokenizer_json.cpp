// tokenizer.json: the vocabulary written into GGUF, and the BPE tokenizer encoding a text with every kind of
// character.
#include <filesystem>

#include "fuzz_util.hpp"
#include "qz/model/text_tokenizer.hpp"
#include "qz/model/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto dir = qz::fuzz::work_dir() / "tokenizer_json";
  std::filesystem::create_directories(dir);
  const auto path = dir / "tokenizer.json";
  std::filesystem::rename(qz::fuzz::input_file(data, size, "tokenizer.json.tmp"), path);
  qz::fuzz::expect_clean([&] { (void)qz::read_vocabulary(dir, "llama", 0); });
  qz::fuzz::expect_clean([&] { (void)qz::make_bpe_tokenizer(path)->encode("Hello  world\n\tcafé 東京 🙂 12345 <s>"); });
  return 0;
}
