// llama-quantize's own output, as an independent truth for `quantize IN.gguf --type PRESET` (issue 15): the
// function llama.cpp's llama-quantize program calls, llama_model_quantize, from the libllama that node-llama-cpp
// ships, compiled against the headers of that very release (cmake/LlamaCppRelease.cmake). With an imatrix file, its
// entries are handed over as llama-quantize's load_imatrix prepares them from a GGUF imatrix: each `NAME.in_sum2`
// divided by its `NAME.counts` (1 where the count is 0), read here through ggml's own GGUF reader.
//   llama_quantize_ref IN.gguf OUT.gguf FTYPE THREADS [IMATRIX.gguf]   (FTYPE: llama_ftype number, e.g. 15 = Q4_K_M)
// Exit 0 when done, 1 on error.
#include <ggml.h>
#include <gguf.h>
#include <llama.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

// name -> values, as llama-quantize's load_imatrix leaves them for a GGUF imatrix.
bool load_imatrix(const char* path, std::map<std::string, std::vector<float>>& out) {
  ggml_context* data = nullptr;
  gguf_init_params params{false, &data};
  gguf_context* g = gguf_init_from_file(path, params);
  if (g == nullptr) return false;
  const std::string suffix = ".in_sum2";
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
    const std::string name = gguf_get_tensor_name(g, i);
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string base = name.substr(0, name.size() - suffix.size());
    const ggml_tensor* sums = ggml_get_tensor(data, name.c_str());
    const ggml_tensor* counts = ggml_get_tensor(data, (base + ".counts").c_str());
    if (sums == nullptr || counts == nullptr || sums->type != GGML_TYPE_F32 || counts->type != GGML_TYPE_F32) {
      std::fprintf(stderr, "%s: %s without an F32 counts tensor\n", path, name.c_str());
      return false;
    }
    const int64_t n = ggml_nelements(sums), ncounts = ggml_nelements(counts), ne0 = n / ncounts;
    const float* s = static_cast<const float*>(sums->data);
    const float* c = static_cast<const float*>(counts->data);
    std::vector<float>& e = out[base];
    e.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < ncounts; ++j)
      for (int64_t k = 0; k < ne0; ++k) e[j * ne0 + k] = c[j] > 0.0f ? s[j * ne0 + k] / c[j] : 1.0f;
  }
  gguf_free(g);
  ggml_free(data);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: llama_quantize_ref IN.gguf OUT.gguf FTYPE THREADS [IMATRIX.gguf]\n");
    return 1;
  }
  std::map<std::string, std::vector<float>> imatrix;
  std::vector<llama_model_imatrix_data> entries;
  if (argc > 5) {
    if (!load_imatrix(argv[5], imatrix)) {
      std::fprintf(stderr, "cannot read the imatrix %s\n", argv[5]);
      return 1;
    }
    for (const auto& [name, values] : imatrix) entries.push_back({name.c_str(), values.data(), values.size()});
    entries.push_back({nullptr, nullptr, 0});
  }
  llama_backend_init();
  llama_model_quantize_params p = llama_model_quantize_default_params();
  p.ftype = static_cast<llama_ftype>(std::atoi(argv[3]));
  p.nthread = std::atoi(argv[4]);
  p.imatrix = entries.empty() ? nullptr : entries.data();
  const uint32_t rc = llama_model_quantize(argv[1], argv[2], &p);
  llama_backend_free();
  if (rc != 0) {
    std::fprintf(stderr, "llama_model_quantize failed (%u)\n", rc);
    return 1;
  }
  return 0;
}
