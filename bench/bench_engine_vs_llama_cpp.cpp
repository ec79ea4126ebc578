// The engine's perplexity pass against llama.cpp's own on the same weights, tokens and threads (issue 13's goal: at
// least half of llama.cpp's rate). The model: bench_engine's synthetic ~300M-parameter LLaMA (6 layers, 2048 wide,
// MLP 5632, 16 heads / 8 KV heads, vocabulary 4096), written once to $TMPDIR/qz-bench-engine and converted to F32
// and F16 GGUF. Ours: `quantize eval`'s pass (engine/perplexity.hpp) on the F32 GGUF. llama.cpp: node-llama-cpp's
// libllama (cmake/LlamaCppRelease.cmake) running llama-perplexity's loop (chunks of CTX tokens, BOS first, the memory
// cleared between chunks, logits for the second half of each chunk; its default F16 KV cache and flash attention)
// on the F32 and the F16 GGUF. Model loading is not timed; the first chunk of each side warms up untimed.
//   ./build/bench/bench_engine_vs_llama_cpp [THREADS=all] [CTX=512] [CHUNKS=4]
#include <ggml-backend.h>
#include <llama.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "qz/core/parallel.hpp"
#include "qz/engine/model_weights.hpp"
#include "qz/engine/perplexity.hpp"
#include "qz/engine/transformer.hpp"
#include "qz/io/checkpoint.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

fs::path model_dir() {
  const fs::path dir = fs::temp_directory_path() / "qz-bench-engine";
  if (!fs::exists(dir / "config.json")) {
    qz::DemoConfig c;  // as bench_engine
    c.layers = 6;
    c.hidden = 2048;
    c.intermediate = 5632;
    c.heads = 16;
    c.kv_heads = 8;
    c.vocab = 4096;
    qz::write_demo_checkpoint(dir, c);
  }
  return dir;
}

fs::path gguf_of(const fs::path& dir, const std::string& type) {
  const fs::path out = dir / ("model-" + type + ".gguf");
  if (!fs::exists(out)) {
    const qz::Checkpoint ck = qz::Checkpoint::open(dir);
    qz::QuantizeOptions o;
    o.type = type;
    qz::quantize_to_gguf(ck, qz::make_plan(ck, o), out, false);
  }
  return out;
}

// llama-perplexity's loop; tokens per second over chunks 1.. (chunk 0 warms up).
double llama_cpp_rate(const fs::path& gguf, const std::vector<int32_t>& tokens, int ctx, int chunks, int threads) {
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(gguf.c_str(), mp);
  if (model == nullptr) throw std::runtime_error("llama.cpp cannot load " + gguf.string());
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(ctx);
  cp.n_seq_max = 1;
  cp.n_threads = cp.n_threads_batch = threads;
  llama_context* lc = llama_init_from_model(model, cp);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  llama_batch batch = llama_batch_init(ctx, 0, 1);
  std::chrono::steady_clock::time_point t0;
  for (int c = 0; c <= chunks; ++c) {
    if (c == 1) t0 = std::chrono::steady_clock::now();
    llama_memory_clear(llama_get_memory(lc), true);
    batch.n_tokens = ctx;
    for (int i = 0; i < ctx; ++i) {
      batch.token[i] = tokens[static_cast<size_t>((c % chunks) * ctx + i)];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = i >= ctx / 2;
    }
    if (llama_vocab_get_add_bos(vocab)) batch.token[0] = llama_vocab_bos(vocab);
    if (llama_decode(lc, batch) != 0) throw std::runtime_error("llama_decode failed");
  }
  const double s = seconds_since(t0);
  llama_batch_free(batch);
  llama_free(lc);
  llama_model_free(model);
  return static_cast<double>(chunks) * ctx / s;
}

double our_rate(const fs::path& gguf, const std::vector<int32_t>& tokens, size_t ctx, size_t chunks, unsigned threads) {
  const auto weights = qz::ModelWeights::open(gguf);
  const qz::Transformer t(*weights, threads);
  qz::PerplexityOptions o;
  o.ctx = ctx;
  o.bos = 1;
  o.max_chunks = 1;
  qz::perplexity(t, tokens, o);  // warm-up: the page cache, the allocator
  o.max_chunks = chunks;
  const auto t0 = std::chrono::steady_clock::now();
  qz::perplexity(t, tokens, o);
  return static_cast<double>(chunks * ctx) / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int threads = argc > 1 ? std::stoi(argv[1]) : static_cast<int>(qz::hardware_threads());
    const int ctx = argc > 2 ? std::stoi(argv[2]) : 512;
    const int chunks = argc > 3 ? std::stoi(argv[3]) : 4;
    const fs::path dir = model_dir();
    const fs::path f32 = gguf_of(dir, "F32"), f16 = gguf_of(dir, "F16");
    std::mt19937 rng(7);
    std::vector<int32_t> tokens(static_cast<size_t>(ctx) * chunks);
    for (auto& id : tokens) id = static_cast<int32_t>(rng() % 4096);
    llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
    llama_backend_init();
    ggml_backend_load_all_from_path(QZ_LLAMA_BIN_DIR);
    const double ours = our_rate(f32, tokens, static_cast<size_t>(ctx), static_cast<size_t>(chunks), static_cast<unsigned>(threads));
    const double theirs32 = llama_cpp_rate(f32, tokens, ctx, chunks, threads);
    const double theirs16 = llama_cpp_rate(f16, tokens, ctx, chunks, threads);
    std::printf("perplexity pass, %d chunks of %d tokens, %d threads, ~300M-parameter LLaMA\n", chunks, ctx, threads);
    std::printf("  quantize eval (F32 GGUF):  %8.1f tokens/s\n", ours);
    std::printf("  llama.cpp     (F32 GGUF):  %8.1f tokens/s   ours / theirs %.2f\n", theirs32, ours / theirs32);
    std::printf("  llama.cpp     (F16 GGUF):  %8.1f tokens/s   ours / theirs %.2f\n", theirs16, ours / theirs16);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_engine_vs_llama_cpp: %s\n", e.what());
    return 1;
  }
}
