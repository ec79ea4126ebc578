// tokenizer.model: the SentencePiece protobuf as this tool reads it (its vocabulary into GGUF) and as
// libsentencepiece loads it to encode.
#include "fuzz_util.hpp"
#include "qz/model/text_tokenizer.hpp"
#include "qz/model/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = qz::fuzz::input_file(data, size, "tokenizer.model");
  qz::fuzz::expect_clean([&] { (void)qz::read_sentencepiece(path); });
  qz::fuzz::expect_clean([&] { (void)qz::make_sentencepiece_tokenizer(path)->encode("Hello world, café 東京"); });
  return 0;
}
