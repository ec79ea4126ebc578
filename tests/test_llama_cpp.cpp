// Whole models in real llama.cpp (node-llama-cpp's CPU build, run in a child process per file): our GGUF files load,
// compute what a plain reference forward pass computes, quantized files stay close to a float file of their own
// dequantized weights, @huggingface/gguf parses every file, and the real stories260K model still tells its story.
// Skipped, saying so, without Node.js and tests/integration/node_modules (tools/setup.sh installs it).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <Eigen/Dense>
#include <array>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "qz/model/architecture.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kScripts = fs::path(QZ_SOURCE_DIR) / "tests" / "integration";

std::string skip_reason() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not installed";
  if (!fs::exists(kScripts / "node_modules" / "node-llama-cpp")) return "tests/integration/node_modules is missing (run tools/setup.sh)";
  return {};
}

// Runs a node script; returns its JSON output (ADD_FAILURE with the output if it failed or aborted).
json run_node(const std::string& script, const std::string& args) {
  const std::string cmd = "node " + (kScripts / script).string() + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 65536> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    ADD_FAILURE() << cmd << " failed (status " << status << "):\n" << out.substr(0, 2000);
    return json::object();
  }
  const auto brace = out.find('{');
  return json::parse(out.substr(brace == std::string::npos ? 0 : brace));
}

std::vector<std::vector<double>> llama_logits(const fs::path& gguf, const std::vector<int>& tokens, int vocab) {
  const json j = run_node("llama_eval.mjs", gguf.string() + " logits '" + json(tokens).dump() + "' " + std::to_string(vocab));
  std::vector<std::vector<double>> out;
  if (j.contains("logits")) out = j["logits"].get<std::vector<std::vector<double>>>();
  return out;
}

// Relative RMS of a - b over all positions, each position's logits centered (llama.cpp's logits are defined up to
// a constant only through the softmax; centering makes the comparison insensitive to it).
double relative_rms(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  double num = 0, den = 0;
  for (size_t p = 0; p < a.size() && p < b.size(); ++p) {
    double ma = 0, mb = 0;
    for (double v : a[p]) ma += v;
    for (double v : b[p]) mb += v;
    ma /= static_cast<double>(a[p].size());
    mb /= static_cast<double>(b[p].size());
    for (size_t i = 0; i < a[p].size(); ++i) {
      num += std::pow((a[p][i] - ma) - (b[p][i] - mb), 2);
      den += std::pow(b[p][i] - mb, 2);
    }
  }
  return std::sqrt(num / den);
}

// ---- A plain LLaMA forward pass from the Hugging Face checkpoint (rotate-half RoPE on HF's q/k layout) ----
using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;

Mat weight(const Checkpoint& ck, const std::string& name) {
  const auto* e = ck.find(name);
  if (e == nullptr) throw std::runtime_error("missing " + name);
  std::vector<float> v(e->tensor->numel());
  convert_to_f32(e->bytes().data(), e->tensor->dtype, v.data(), v.size());
  const auto rows = static_cast<Eigen::Index>(e->tensor->shape[0]);
  const auto cols = static_cast<Eigen::Index>(e->tensor->shape.size() > 1 ? e->tensor->shape[1] : 1);
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), rows, cols).cast<double>();
}

Vec rmsnorm(const Vec& x, const Mat& w, double eps) { return (x / std::sqrt(x.squaredNorm() / x.size() + eps)).cwiseProduct(w.col(0)); }

void rope(Vec& v, int heads, int hd, int pos, double base) {
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      const double theta = pos * std::pow(base, -2.0 * i / hd);
      const double a = v[h * hd + i], b = v[h * hd + i + hd / 2];
      v[h * hd + i] = a * std::cos(theta) - b * std::sin(theta);
      v[h * hd + i + hd / 2] = b * std::cos(theta) + a * std::sin(theta);
    }
}

std::vector<std::vector<double>> reference_logits(const Checkpoint& ck, const ModelConfig& m, const std::vector<int>& tokens) {
  const int H = static_cast<int>(m.head_count), KV = static_cast<int>(m.head_count_kv), hd = static_cast<int>(m.head_dim);
  const Mat emb = weight(ck, "model.embed_tokens.weight");
  const Mat out_w = ck.find("lm_head.weight") ? weight(ck, "lm_head.weight") : emb;
  std::vector<Vec> x;
  for (int t : tokens) x.push_back(emb.row(t).transpose());
  for (uint32_t l = 0; l < m.block_count; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const Mat wq = weight(ck, p + "self_attn.q_proj.weight"), wk = weight(ck, p + "self_attn.k_proj.weight"),
              wv = weight(ck, p + "self_attn.v_proj.weight"), wo = weight(ck, p + "self_attn.o_proj.weight");
    const Mat n1 = weight(ck, p + "input_layernorm.weight"), n2 = weight(ck, p + "post_attention_layernorm.weight");
    const Mat wg = weight(ck, p + "mlp.gate_proj.weight"), wu = weight(ck, p + "mlp.up_proj.weight"),
              wd = weight(ck, p + "mlp.down_proj.weight");
    const bool bias = ck.find(p + "self_attn.q_proj.bias") != nullptr;  // Qwen2
    const Vec bq = bias ? Vec(weight(ck, p + "self_attn.q_proj.bias").col(0)) : Vec::Zero(wq.rows());
    const Vec bk = bias ? Vec(weight(ck, p + "self_attn.k_proj.bias").col(0)) : Vec::Zero(wk.rows());
    const Vec bv = bias ? Vec(weight(ck, p + "self_attn.v_proj.bias").col(0)) : Vec::Zero(wv.rows());
    std::vector<Vec> q, k, v;
    for (size_t t = 0; t < x.size(); ++t) {
      const Vec h = rmsnorm(x[t], n1, m.rms_norm_eps);
      q.push_back(wq * h + bq);
      k.push_back(wk * h + bk);
      v.push_back(wv * h + bv);
      rope(q.back(), H, hd, static_cast<int>(t), m.rope_freq_base);
      rope(k.back(), KV, hd, static_cast<int>(t), m.rope_freq_base);
    }
    for (size_t t = 0; t < x.size(); ++t) {
      Vec attn = Vec::Zero(H * hd);
      for (int h = 0; h < H; ++h) {
        const int g = h / (H / KV);
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (size_t u = 0; u <= t; ++u) {
          s[u] = q[t].segment(h * hd, hd).dot(k[u].segment(g * hd, hd)) / std::sqrt(double(hd));
          mx = std::max(mx, s[u]);
        }
        double z = 0;
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (size_t u = 0; u <= t; ++u) attn.segment(h * hd, hd) += s[u] / z * v[u].segment(g * hd, hd);
      }
      x[t] += wo * attn;
      const Vec h2 = rmsnorm(x[t], n2, m.rms_norm_eps);
      const Vec gate = wg * h2, up = wu * h2;
      Vec act(gate.size());
      for (Eigen::Index i = 0; i < gate.size(); ++i) act[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      x[t] += wd * act;
    }
  }
  const Mat norm = weight(ck, "model.norm.weight");
  std::vector<std::vector<double>> logits;
  for (const auto& xt : x) {
    const Vec l = out_w * rmsnorm(xt, norm, m.rms_norm_eps);
    logits.emplace_back(l.data(), l.data() + l.size());
  }
  return logits;
}

Report convert(const fs::path& in, const fs::path& out, const std::string& type) {
  QuantizeOptions o;
  o.type = type;
  const Checkpoint ck = Checkpoint::open(in);
  return quantize_to_gguf(ck, make_plan(ck, o), o, out, true);
}

class LlamaCpp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why << ": llama.cpp integration not run";
  }
  test::TempDir dir_;
};

TEST_F(LlamaCpp, DemoModelMatchesTheReferenceForwardPassAndItsDequantizedSelf) {
  write_demo_checkpoint(dir_ / "demo");
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  const std::vector<int> tokens = {1, 300, 301, 302, 303, 304, 305, 306, 307, 310};
  const int vocab = static_cast<int>(m.vocab_size);

  // F32 through llama.cpp equals the reference forward pass on the Hugging Face weights: the tensor names, the
  // q/k permutation, RoPE, GQA and the metadata are all right.
  convert(dir_ / "demo", dir_ / "f32.gguf", "F32");
  const auto reference = reference_logits(ck, m, tokens);
  const auto f32 = llama_logits(dir_ / "f32.gguf", tokens, vocab);
  ASSERT_EQ(f32.size(), tokens.size());
  EXPECT_LT(relative_rms(f32, reference), 1e-3);

  for (const char* type : {"F16", "Q8_0", "Q4_0", "Q4_K_M"}) {
    SCOPED_TRACE(type);
    const fs::path q = dir_ / (std::string(type) + ".gguf"), deq = dir_ / (std::string(type) + "-deq.gguf");
    convert(dir_ / "demo", q, type);
    dequantize_gguf_to_gguf(q, deq, true);
    const auto lq = llama_logits(q, tokens, vocab), ld = llama_logits(deq, tokens, vocab);
    ASSERT_EQ(lq.size(), tokens.size());
    // llama.cpp computing on our blocks vs on our own decoding of them: a wrong nibble order would give ~1.
    EXPECT_LT(relative_rms(lq, ld), 5e-2);
    const double vs_reference = relative_rms(lq, reference);
    EXPECT_LT(vs_reference, std::string(type) == "F16" ? 1e-2 : 0.3);
    const json parsed = run_node("parse_gguf.mjs", q.string());
    EXPECT_EQ(parsed.value("architecture", ""), "llama");
    EXPECT_EQ(parsed.value("tensors", 0), 21);
    std::cout << type << ": llama.cpp vs own dequantized F32 rel RMS " << relative_rms(lq, ld)
              << ", vs reference forward pass " << vs_reference << "\n";
  }
}

TEST_F(LlamaCpp, Qwen2DemoWithBiasesAndByteLevelBpeMatchesTheReference) {
  DemoConfig c;
  c.architecture = "Qwen2ForCausalLM";
  write_demo_checkpoint(dir_ / "qwen", c);
  const Checkpoint ck = Checkpoint::open(dir_ / "qwen");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "qwen");
  const std::vector<int> tokens = {300, 301, 302, 260, 261, 400, 401, 511};
  convert(dir_ / "qwen", dir_ / "f32.gguf", "F32");
  const auto reference = reference_logits(ck, m, tokens);
  const auto f32 = llama_logits(dir_ / "f32.gguf", tokens, static_cast<int>(m.vocab_size));
  ASSERT_EQ(f32.size(), tokens.size());
  EXPECT_LT(relative_rms(f32, reference), 1e-3);
  convert(dir_ / "qwen", dir_ / "q.gguf", "Q4_K_M");
  dequantize_gguf_to_gguf(dir_ / "q.gguf", dir_ / "q-deq.gguf", true);
  EXPECT_LT(relative_rms(llama_logits(dir_ / "q.gguf", tokens, 512), llama_logits(dir_ / "q-deq.gguf", tokens, 512)), 5e-2);
  EXPECT_EQ(run_node("parse_gguf.mjs", (dir_ / "q.gguf").string()).value("architecture", ""), "qwen2");
}

TEST_F(LlamaCpp, Stories260KTellsItsStoryAndKeepsItsPerplexity) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const std::string eval = (model / "eval_tokens.u32").string();
  std::map<std::string, double> ppl;
  for (const char* type : {"F32", "F16", "Q8_0", "Q4_0", "Q4_K_M"}) {
    SCOPED_TRACE(type);
    const fs::path out = dir_ / (std::string(type) + ".gguf");
    const Report r = convert(model, out, type);
    if (std::string(type) == "Q4_K_M") EXPECT_GT(r.fallbacks, 0u);  // rows of 64 and 172 fit no 256-block
    const json j = run_node("llama_eval.mjs", out.string() + " perplexity " + eval + " 4096");
    ppl[type] = j.value("perplexity", 1e9);
    std::cout << "stories260K " << type << ": perplexity " << ppl[type] << " over " << j.value("scored", 0)
              << " tokens, " << r.bits_per_weight() << " bits per weight\n";
  }
  EXPECT_LT(ppl["F32"], 4.5);
  EXPECT_NEAR(ppl["F16"], ppl["F32"], 0.01 * ppl["F32"]);
  EXPECT_NEAR(ppl["Q8_0"], ppl["F32"], 0.02 * ppl["F32"]);
  EXPECT_LT(ppl["Q4_0"], 1.3 * ppl["F32"]);
  EXPECT_LT(ppl["Q4_K_M"], 1.3 * ppl["F32"]);
  const json g = run_node("llama_eval.mjs", (dir_ / "F16.gguf").string() + " generate 'Once upon a time' 12");
  EXPECT_EQ(g.value("text", "").rfind(", there was a little girl named Lily", 0), 0u) << g.dump();
}

}  // namespace
}  // namespace qz
