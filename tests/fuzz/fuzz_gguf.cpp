// GGUF: header, metadata, tensor infos; then what the tools read from it: the stored tensors (decoded when small),
// the model configuration, the tokenizer.
#include "fuzz_util.hpp"
#include "qz/engine/model_weights.hpp"
#include "qz/formats/stored_tensor.hpp"
#include "qz/io/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = qz::fuzz::input_file(data, size, "model.gguf");
  qz::fuzz::expect_clean([&] {
    const qz::GgufFile g(path, qz::GgufFile::kThisFileOnly);
    for (const auto& kv : g.metadata()) (void)kv.value.to_string();
    for (const auto& t : g.tensors()) {
      uint64_t n = 1;
      for (auto d : t.ne) n *= d;
      if (n <= (1u << 16)) qz::fuzz::expect_clean([&] { (void)qz::decode_stored_tensor(g, t); });
    }
    (void)qz::model_config_from_gguf(g);
  });
  return 0;
}
