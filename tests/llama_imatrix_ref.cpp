// llama-imatrix's statistic computed by llama.cpp itself, as an independent truth for `quantize imatrix` (issue 14).
// The npm llama.cpp build the tests use has no llama-imatrix program, only libllama and ggml; this helper runs the
// same protocol on them (../shared/reference/ENGINE_NOTES.md section 2): the text, one trailing newline stripped,
// tokenized by llama.cpp with BOS; consecutive chunks of CTX tokens, each chunk's first token replaced by BOS, the
// memory cleared between chunks, every position asking for logits; and, from ggml's evaluation callback, for every
// matrix product of a `blk.*` weight with at least 16 F32 input rows, the sum of squared inputs per column (in float,
// rows in order) and the number of rows. Compiled against the headers of the very llama.cpp release those libraries
// were built from (extracted from node-llama-cpp's source bundle at configure time), so the structs are that ABI.
//   llama_imatrix_ref MODEL.gguf TEXT CTX CHUNKS THREADS OUT.json [--exact-attention]
// CHUNKS -1: as many as the text holds. --exact-attention: an F32 KV cache and no flash attention (llama-imatrix's
// defaults are an F16 cache and, on the CPU, flash attention, which round what the attention output is made of).
// Writes {"chunk_count": N, "chunk_size": CTX, "tensors": {name: {"in_sum2": [...], "count": rows}}}.
// Exit 0 when done, 1 on error.
#include <ggml-backend.h>
#include <ggml.h>
#include <llama.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Statistic {
  std::vector<float> in_sum2;
  int64_t count = 0;
};

struct Collector {
  std::map<std::string, Statistic> stats;
  std::vector<char> copy;  // src1 brought to the host when its buffer is not
};

// The weight's name without a backend's decoration ("CUDA0#blk.0.attn_k.weight#0" -> "blk.0.attn_k.weight").
std::string weight_name(const char* name) {
  std::string s(name);
  if (const auto p = s.find('#'); p != std::string::npos) {
    s = s.substr(p + 1);
    if (const auto q = s.find('#'); q != std::string::npos) s = s.substr(0, q);
  }
  return s;
}

bool collect(ggml_tensor* t, bool ask, void* user) {
  auto& c = *static_cast<Collector*>(user);
  if (t->op != GGML_OP_MUL_MAT) return ask ? false : true;
  const ggml_tensor* src0 = t->src[0];
  const ggml_tensor* src1 = t->src[1];
  const std::string name = weight_name(src0->name);
  if (ask) return src1->ne[1] >= 16 && src1->type == GGML_TYPE_F32 && name.rfind("blk.", 0) == 0;
  const char* data = static_cast<const char*>(src1->data);
  if (!ggml_backend_buffer_is_host(src1->buffer)) {
    c.copy.resize(ggml_nbytes(src1));
    ggml_backend_tensor_get(src1, c.copy.data(), 0, c.copy.size());
    data = c.copy.data();
  }
  Statistic& s = c.stats[name];
  const int64_t ne0 = src1->ne[0];
  if (s.in_sum2.empty()) s.in_sum2.assign(static_cast<size_t>(ne0), 0.0f);
  for (int64_t i3 = 0; i3 < src1->ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < src1->ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < src1->ne[1]; ++i1) {
        const auto* x = reinterpret_cast<const float*>(data + i1 * src1->nb[1] + i2 * src1->nb[2] + i3 * src1->nb[3]);
        for (int64_t j = 0; j < ne0; ++j) s.in_sum2[static_cast<size_t>(j)] += x[j] * x[j];
        ++s.count;
      }
  return true;
}

int run(int argc, char** argv) {
  if (argc != 7 && !(argc == 8 && std::string(argv[7]) == "--exact-attention")) {
    std::fprintf(stderr, "usage: llama_imatrix_ref MODEL.gguf TEXT CTX CHUNKS THREADS OUT.json [--exact-attention]\n");
    return 1;
  }
  const bool exact_attention = argc == 8;
  const int n_ctx = std::stoi(argv[3]);
  const int max_chunks = std::stoi(argv[4]);
  const int threads = std::stoi(argv[5]);
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", argv[2]);
    return 1;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  if (!text.empty() && text.back() == '\n') text.pop_back();

  llama_backend_init();
  ggml_backend_load_all_from_path(QZ_LLAMA_BIN_DIR);
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (model == nullptr) {
    std::fprintf(stderr, "llama.cpp cannot load %s\n", argv[1]);
    return 1;
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);
  std::vector<llama_token> tokens(text.size() + 16);
  int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                         static_cast<int32_t>(tokens.size()), true, false);
  if (n < 0) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), true, false);
  }
  tokens.resize(static_cast<size_t>(n));
  if (n < 2 * n_ctx) {
    std::fprintf(stderr, "%d tokens, fewer than 2 x %d\n", n, n_ctx);
    return 1;
  }
  int n_chunk = n / n_ctx;
  if (max_chunks >= 0 && max_chunks < n_chunk) n_chunk = max_chunks;

  Collector collector;
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(n_ctx);
  cp.n_batch = static_cast<uint32_t>(n_ctx);
  cp.n_ubatch = static_cast<uint32_t>(n_ctx);
  cp.n_seq_max = 1;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  if (exact_attention) {
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  }
  cp.cb_eval = collect;
  cp.cb_eval_user_data = &collector;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) {
    std::fprintf(stderr, "llama.cpp cannot make a context\n");
    return 1;
  }
  const bool add_bos = llama_vocab_get_add_bos(vocab);
  llama_batch batch = llama_batch_init(n_ctx, 0, 1);
  for (int c = 0; c < n_chunk; ++c) {
    llama_memory_clear(llama_get_memory(ctx), true);
    batch.n_tokens = n_ctx;
    for (int i = 0; i < n_ctx; ++i) {
      batch.token[i] = tokens[static_cast<size_t>(c * n_ctx + i)];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    if (add_bos) batch.token[0] = llama_vocab_bos(vocab);
    if (llama_decode(ctx, batch) != 0) {
      std::fprintf(stderr, "llama_decode failed on chunk %d\n", c);
      return 1;
    }
  }
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);

  nlohmann::json out;
  out["chunk_count"] = n_chunk;
  out["chunk_size"] = n_ctx;
  out["tensors"] = nlohmann::json::object();
  for (const auto& [name, s] : collector.stats) out["tensors"][name] = {{"in_sum2", s.in_sum2}, {"count", s.count}};
  std::ofstream(argv[6]) << out.dump();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llama_imatrix_ref: %s\n", e.what());
    return 1;
  }
}
