// config.json: the model configuration and a quantized checkpoint's quantization_config.
#include <nlohmann/json.hpp>

#include "fuzz_util.hpp"
#include "qz/model/architecture.hpp"
#include "qz/model/packed_linear.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;  // (the readers report invalid JSON themselves, naming the file)
  qz::fuzz::expect_clean([&] { (void)qz::parse_model_config(j, "config.json", "model"); });
  qz::fuzz::expect_clean([&] { (void)qz::read_packed_scheme(qz::fuzz::work_dir(), j); });
  return 0;
}
