// Importance matrices: llama.cpp's GGUF imatrix and legacy .dat files.
#include "fuzz_util.hpp"
#include "qz/io/imatrix.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (const char* name : {"imatrix.dat", "imatrix.gguf"}) {
    const auto path = qz::fuzz::input_file(data, size, name);
    qz::fuzz::expect_clean([&] { (void)qz::read_imatrix(path); });
  }
  return 0;
}
