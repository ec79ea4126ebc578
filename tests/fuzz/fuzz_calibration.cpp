// Calibration files: text (.txt, .jsonl with "text", .json lists of strings or of token ids) read into documents
// with the demo's tokenizer, and activation .safetensors files read into the inputs of each layer.
#include <filesystem>

#include "fuzz_util.hpp"
#include "qz/calibration/calibration_set.hpp"
#include "qz/calibration/calibration_text.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/model/text_tokenizer.hpp"

namespace {
const qz::TextTokenizer& demo_tokenizer() {
  static const auto tok = [] {
    const auto dir = qz::fuzz::work_dir() / "demo";
    qz::write_demo_checkpoint(dir);
    return qz::open_text_tokenizer(dir);
  }();
  return *tok;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (const char* name : {"calib.txt", "calib.jsonl", "calib.json"}) {
    const auto path = qz::fuzz::input_file(data, size, name);
    qz::fuzz::expect_clean([&] { (void)qz::read_calibration_documents(path, &demo_tokenizer(), 1, 512); });
  }
  const auto acts = qz::fuzz::input_file(data, size, "calib.safetensors");
  qz::fuzz::expect_clean([&] {
    const qz::CalibrationSet set({acts});
    for (const char* w : {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"})
      for (const auto& in : set.inputs_of(w)) qz::check_calib_width(in, 256, w);
  });
  return 0;
}
