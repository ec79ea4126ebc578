// Uses the installed library: quantizes a row to Q4_0 through the format table, checks every value against the
// format's error bound (a Q4_0 block's step is max|x| / 8; no value is further than one step from its original),
// and writes and reads back a GGUF file. Exits non-zero with a message on any failure.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "qz/formats/format_table.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/output_file.hpp"

int main(int argc, char** argv) {
  const auto format = qz::find_format("Q4_0");
  const size_t n = 256;
  std::vector<float> x(n), y(n);
  for (size_t i = 0; i < n; ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * (1.0f + static_cast<float>(i % 7));
  std::vector<uint8_t> q(format->row_bytes(n));
  format->quantize_row(x.data(), q.data(), n, nullptr);
  format->dequantize_row(q.data(), y.data(), n);
  for (size_t b = 0; b < n; b += format->block_size()) {
    float amax = 0.0f;
    for (size_t i = b; i < b + format->block_size(); ++i) amax = std::fmax(amax, std::fabs(x[i]));
    for (size_t i = b; i < b + format->block_size(); ++i)
      if (std::fabs(x[i] - y[i]) > amax / 8.0f * 1.001f) {
        std::fprintf(stderr, "value %zu: %g came back as %g\n", i, x[i], y[i]);
        return 1;
      }
  }
  const std::filesystem::path out = argc > 1 ? argv[1] : "consumer.gguf";
  qz::GgufWriter w;
  w.add_tensor("w", {n}, format->storage_type());
  {
    qz::OutputFile f(out, true);
    w.write_header(f);
    w.write_tensor_data(f, q);
    w.finish();
    f.commit();
  }
  const qz::GgufFile g(out);
  if (g.tensors().size() != 1 || g.tensors()[0].name != "w") {
    std::fprintf(stderr, "%s: read back wrong\n", out.c_str());
    return 1;
  }
  std::printf("quantize %s: Q4_0 row within bound, %s written and read back\n", QUANTIZE_VERSION, out.c_str());
  return 0;
}
