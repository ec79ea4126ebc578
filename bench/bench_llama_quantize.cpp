// llama-quantize's own work, for end-to-end comparisons (bench/vs_llama_quantize.sh): llama_model_quantize from the
// libllama that node-llama-cpp ships (the function llama.cpp's llama-quantize tool calls), on a GGUF, with a thread
// count; and a tensor-by-tensor comparison of two GGUF files.
//   bench_llama_quantize quantize IN.gguf OUT.gguf TYPE THREADS [path/to/libllama.so]   (TYPE: Q8_0, Q4_K_M, ...)
//   bench_llama_quantize compare A.gguf B.gguf
// Prints the seconds llama_model_quantize took; exit code 0 when done, 1 on error, 77 when libllama is absent.
#include <dlfcn.h>
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <map>
#include <string>

#include "qz/io/gguf.hpp"

namespace {

// llama.h's llama_model_quantize_params of llama.cpp v0.5.0 (the release node-llama-cpp bundles), field for field.
struct LlamaQuantizeParams {
  int32_t nthread;
  int32_t ftype;                 // enum llama_ftype
  int32_t output_tensor_type;    // enum ggml_type
  int32_t token_embedding_type;  // enum ggml_type
  bool allow_requantize;
  bool quantize_output_tensor;
  bool only_copy;
  bool pure;
  bool keep_split;
  bool dry_run;
  const void* imatrix;
  const void* kv_overrides;
  const void* tt_overrides;
  const int32_t* prune_layers;
  size_t max_buf_size;
};
using DefaultParamsFn = LlamaQuantizeParams (*)();
using QuantizeFn = uint32_t (*)(const char*, const char*, const LlamaQuantizeParams*);
using VoidFn = void (*)();

// llama_ftype values (llama.h).
const std::map<std::string, int32_t> kFtypes = {
    {"Q4_0", 2},   {"Q4_1", 3},    {"Q8_0", 7},    {"Q5_0", 8},    {"Q5_1", 9},    {"Q2_K", 10},   {"Q3_K_S", 11},
    {"Q3_K_M", 12}, {"Q3_K_L", 13}, {"Q4_K_S", 14}, {"Q4_K_M", 15}, {"Q5_K_S", 16}, {"Q5_K_M", 17}, {"Q6_K", 18}};

int quantize(int argc, char** argv) {
  if (argc < 6) {
    fmt::print(stderr, "usage: bench_llama_quantize quantize IN.gguf OUT.gguf TYPE THREADS [libllama.so]\n");
    return 1;
  }
  const std::string lib = argc > 6 ? argv[6]
                                   : std::string(QZ_SOURCE_DIR) +
                                         "/tests/integration/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/"
                                         "libllama.v0.5.0.so";
  void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    fmt::print("skipped: cannot load {} ({})\n", lib, dlerror());
    return 77;
  }
  auto defaults = reinterpret_cast<DefaultParamsFn>(dlsym(h, "llama_model_quantize_default_params"));
  auto run = reinterpret_cast<QuantizeFn>(dlsym(h, "llama_model_quantize"));
  auto backend_init = reinterpret_cast<VoidFn>(dlsym(h, "llama_backend_init"));
  if (!defaults || !run || !backend_init) {
    fmt::print("skipped: {} lacks llama_model_quantize\n", lib);
    return 77;
  }
  const auto ft = kFtypes.find(argv[4]);
  if (ft == kFtypes.end()) {
    fmt::print(stderr, "unknown type {}\n", argv[4]);
    return 1;
  }
  backend_init();
  LlamaQuantizeParams p = defaults();
  p.ftype = ft->second;
  p.nthread = std::stoi(argv[5]);
  const auto t0 = std::chrono::steady_clock::now();
  const uint32_t rc = run(argv[2], argv[3], &p);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc != 0) {
    fmt::print(stderr, "llama_model_quantize failed ({})\n", rc);
    return 1;
  }
  fmt::print("{:.3f}\n", s);
  return 0;
}

// Same tensor names, types, shapes and bytes (metadata may differ).
int compare(const char* a_path, const char* b_path) {
  const qz::GgufFile a(a_path), b(b_path);
  size_t differ = 0;
  if (a.tensors().size() != b.tensors().size()) {
    fmt::print("tensor counts differ: {} vs {}\n", a.tensors().size(), b.tensors().size());
    return 1;
  }
  for (const auto& t : a.tensors()) {
    const auto* u = b.find_tensor(t.name);
    if (u == nullptr || u->type != t.type || u->ne != t.ne) {
      fmt::print("{}: missing or of another type/shape in {}\n", t.name, b_path);
      ++differ;
      continue;
    }
    const auto x = a.data(t), y = b.data(*u);
    if (x.size() != y.size() || std::memcmp(x.data(), y.data(), x.size()) != 0) {
      fmt::print("{}: bytes differ\n", t.name);
      ++differ;
    }
  }
  if (differ == 0) fmt::print("identical tensors\n");
  else fmt::print("{} tensors differ\n", differ);
  return differ == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && std::string(argv[1]) == "quantize") return quantize(argc, argv);
    if (argc == 4 && std::string(argv[1]) == "compare") return compare(argv[2], argv[3]);
    fmt::print(stderr, "usage: bench_llama_quantize quantize IN OUT TYPE THREADS [lib] | compare A B\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
