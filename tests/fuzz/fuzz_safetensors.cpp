// safetensors: header, offsets, dtypes; then every tensor's first values converted.
#include <vector>

#include "fuzz_util.hpp"
#include "qz/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = qz::fuzz::input_file(data, size, "model.safetensors");
  qz::fuzz::expect_clean([&] {
    const qz::SafetensorsFile f(path);
    for (const auto& t : f.tensors()) {
      const auto bytes = f.data(t);
      const size_t n = std::min<size_t>(t.numel(), 64);
      if (qz::dtype_is_numeric_input(t.dtype) && bytes.size() >= n * qz::dtype_size(t.dtype)) {
        std::vector<float> v(n);
        qz::convert_to_f32(bytes.data(), t.dtype, v.data(), n);
      }
    }
  });
  return 0;
}
