// The engine's forward pass and perplexity. Truths: the plain float64 reference forward pass written from the model
// definition (tests/reference_forward.hpp) on Llama- and Qwen2-shaped demos, the same model read from its F32 GGUF
// (llama.cpp's permuted q/k rows and RoPE layout), and perplexity recomputed from the logits by the definition.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "qz/core/error.hpp"
#include "qz/engine/perplexity.hpp"
#include "qz/engine/rope.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "reference_forward.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

double relative_rms(const std::vector<float>& ours, const std::vector<std::vector<double>>& ref) {
  double num = 0, den = 0;
  const size_t vocab = ref[0].size();
  for (size_t t = 0; t < ref.size(); ++t)
    for (size_t i = 0; i < vocab; ++i) {
      const double e = ours[t * vocab + i] - ref[t][i];
      num += e * e;
      den += ref[t][i] * ref[t][i];
    }
  return std::sqrt(num / den);
}

class Engine : public ::testing::TestWithParam<std::string> {};

TEST_P(Engine, MatchesTheReferenceForwardPassFromTheCheckpointAndFromItsGguf) {
  test::TempDir dir;
  DemoConfig c;
  c.architecture = GetParam();
  if (c.architecture == "Qwen3ForCausalLM") c.head_dim = 128;  // 4 heads x 128: q/o widths of 512 against 256 hidden
  write_demo_checkpoint(dir / "demo", c);
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  const std::vector<int32_t> a = test::some_tokens(19, 1, 512), b = test::some_tokens(7, 2, 512);
  const auto ref_a = test::reference_logits(ck, m, std::vector<int>(a.begin(), a.end()));
  const auto ref_b = test::reference_logits(ck, m, std::vector<int>(b.begin(), b.end()));
  const auto weights = ModelWeights::open(dir / "demo");
  const Transformer model(*weights, 2);
  const auto out = model.logits({a, b});  // two sequences of different lengths in one pass
  ASSERT_EQ(out[0].size(), a.size() * 512);
  EXPECT_LT(relative_rms(out[0], ref_a), 1e-5);
  EXPECT_LT(relative_rms(out[1], ref_b), 1e-5);
  // The same model from its F32 GGUF: llama.cpp's q/k row order and RoPE layout, names, the metadata's config.
  QuantizeOptions o;
  o.type = "F32";
  quantize_to_gguf(ck, make_plan(ck, o), dir / "f32.gguf", false);
  const auto g = ModelWeights::open(dir / "f32.gguf");
  EXPECT_EQ(g->config().head_count_kv, m.head_count_kv);
  EXPECT_LT(relative_rms(Transformer(*g, 1).logits({a})[0], ref_a), 1e-5);
  // Any thread count gives the same logits, bit for bit.
  EXPECT_EQ(Transformer(*weights, 1).logits({a, b}), out);
}

INSTANTIATE_TEST_SUITE_P(Architectures, Engine, ::testing::Values("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"));

// Llama 3.1's rope scaling (a short original context, so that every kind of frequency is scaled on a short text):
// the engine from the checkpoint and from its GGUF (rope_freqs.weight) equals the reference, which differs from the
// unscaled model's logits.
TEST(EngineRope, Llama3ScalingFromTheCheckpointAndFromRopeFreqsInItsGguf) {
  test::TempDir dir;
  DemoConfig c;
  c.rope_scaling = R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 16})";
  write_demo_checkpoint(dir / "l3", c);
  write_demo_checkpoint(dir / "plain");
  const Checkpoint ck = Checkpoint::open(dir / "l3");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "l3");
  ASSERT_FALSE(m.rope_freq_factors.empty());
  const std::vector<int32_t> a = test::some_tokens(40, 4, 512);
  const auto ref = test::reference_logits(ck, m, std::vector<int>(a.begin(), a.end()));
  const auto weights = ModelWeights::open(dir / "l3");
  const auto out = Transformer(*weights, 2).logits({a})[0];
  EXPECT_LT(relative_rms(out, ref), 1e-5);
  EXPECT_GT(relative_rms(Transformer(*ModelWeights::open(dir / "plain"), 2).logits({a})[0], ref), 1e-3);
  QuantizeOptions o;
  o.type = "F32";
  const Plan plan = make_plan(ck, o);
  ASSERT_EQ(plan.tensors.front().name, "rope_freqs.weight");
  quantize_to_gguf(ck, plan, dir / "l3.gguf", false);
  const auto g = ModelWeights::open(dir / "l3.gguf");
  EXPECT_EQ(g->config().rope_freq_factors, m.rope_freq_factors);
  EXPECT_LT(relative_rms(Transformer(*g, 1).logits({a})[0], ref), 1e-5);
}

// YaRN (Qwen2.5's long-context setting), with a short original context so that the blend of interpolated and
// extrapolated frequencies shows on a short text: the engine from the checkpoint and from its GGUF
// (rope.scaling.* keys) equals the reference, which follows Hugging Face's formulation, for both rope layouts; the
// unscaled and the linear-scaled models differ from it.
class EngineYarn : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineYarn, FromTheCheckpointAndFromItsGgufAsHuggingFaceComputesIt) {
  test::TempDir dir;
  DemoConfig c;
  c.architecture = GetParam();
  c.rope_scaling = R"({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})";
  write_demo_checkpoint(dir / "y", c);
  const Checkpoint ck = Checkpoint::open(dir / "y");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "y");
  ASSERT_EQ(m.rope_scaling_type, "yarn");
  const std::vector<int32_t> a = test::some_tokens(40, 4, 512);
  const std::vector<int> ai(a.begin(), a.end());
  const auto ref = test::reference_logits(ck, m, ai);
  const auto out = Transformer(*ModelWeights::open(dir / "y"), 2).logits({a})[0];
  EXPECT_LT(relative_rms(out, ref), 1e-5);
  ModelConfig plain = m, linear = m;
  plain.rope_scaling_type.clear();
  linear.rope_scaling_type = "linear";
  EXPECT_GT(relative_rms(out, test::reference_logits(ck, plain, ai)), 1e-3);
  EXPECT_GT(relative_rms(out, test::reference_logits(ck, linear, ai)), 1e-3);
  QuantizeOptions o;
  o.type = "F32";
  quantize_to_gguf(ck, make_plan(ck, o), dir / "y.gguf", false);
  const auto g = ModelWeights::open(dir / "y.gguf");
  EXPECT_EQ(g->config().rope_scaling_type, "yarn");
  EXPECT_EQ(g->config().rope_original_context, 16u);
  EXPECT_LT(relative_rms(Transformer(*g, 1).logits({a})[0], ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Architectures, EngineYarn, ::testing::Values("LlamaForCausalLM", "Qwen2ForCausalLM"));

// ggml's YaRN angles by hand for one frequency of each kind: extrapolated (i <= low), interpolated (i >= high),
// and blended between; cos and sin scaled by 1 + 0.1 ln(factor).
TEST(EngineRope, YarnAnglesByHand) {
  ModelConfig m;
  m.name = "hand";
  m.head_dim = 64;
  m.rope_freq_base = 10000.0f;
  m.rope_scaling_type = "yarn";
  m.rope_scaling_factor = 4.0f;
  m.rope_original_context = 16;
  // d(b) = 64 ln(16 / (2 pi b)) / (2 ln 10000): d(32) < 0 -> low 0; d(1) = 3.25 -> high 4.
  const RopeTable t = rope_table(m, 8);
  const double mscale = 1 + 0.1 * std::log(4.0);
  const size_t half = 32, p = 7;
  auto inv = [](double i) { return std::pow(10000.0, -2.0 * i / 64); };
  EXPECT_NEAR(t.cos[p * half + 0], std::cos(p * inv(0)) * mscale, 1e-6);           // r = 1: extrapolated
  EXPECT_NEAR(t.sin[p * half + 20], std::sin(p * inv(20) / 4) * mscale, 1e-6);     // r = 0: interpolated
  const double r = 1 - (2 - 0) / 4.0;                                               // i = 2: half way
  EXPECT_NEAR(t.sin[p * half + 2], std::sin(p * inv(2) / 4 * (1 - r) + p * inv(2) * r) * mscale, 1e-6);
  m.rope_scaling_type = "dynamic";
  EXPECT_THROW(rope_table(m, 8), InputError);
}

TEST(EnginePerplexity, ScoresTheSecondHalfOfEachChunkWithBosFirst) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const auto weights = ModelWeights::open(dir / "demo");
  const Transformer model(*weights, 2);
  const std::vector<int32_t> tokens = test::some_tokens(70, 3, 512);  // 4 chunks of 16, 6 tokens left over
  PerplexityOptions o;
  o.ctx = 16;
  o.bos = 1;
  o.sequences_per_pass = 3;
  const PerplexityResult r = perplexity(model, tokens, o);
  EXPECT_EQ(r.chunks, 4u);
  EXPECT_EQ(r.scored, 4u * (16 - 1 - 8));
  // By the definition, from the reference forward pass: chunk c = tokens[16c, 16c+16) with BOS in front, logits at
  // positions 8..14 score tokens 9..15.
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  double nll = 0;
  for (size_t c = 0; c < 4; ++c) {
    std::vector<int> s(tokens.begin() + static_cast<std::ptrdiff_t>(16 * c), tokens.begin() + static_cast<std::ptrdiff_t>(16 * c + 16));
    s[0] = 1;
    const auto l = test::reference_logits(ck, m, s);
    for (size_t j = 8; j < 15; ++j) {
      double mx = -1e300, z = 0;
      for (double v : l[j]) mx = std::max(mx, v);
      for (double v : l[j]) z += std::exp(v - mx);
      nll -= l[j][static_cast<size_t>(tokens[16 * c + j + 1])] - mx - std::log(z);
    }
  }
  EXPECT_NEAR(r.ppl, std::exp(nll / 28.0), 1e-4 * r.ppl);
  EXPECT_EQ(r.running_ppl.size(), 4u);
  EXPECT_GT(r.ppl_error, 0.0);
  // A model against itself: no divergence, always the same top token.
  const PerplexityResult self = perplexity(model, tokens, o, &model);
  ASSERT_TRUE(self.kl);
  EXPECT_NEAR(self.kl->mean, 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(self.kl->top1_agreement, 1.0);
  EXPECT_NEAR(self.kl->base_ppl, std::exp(nll / 28.0), 1e-4 * r.ppl);  // the base's own perplexity, from the reference
  // Too short a text, and token ids outside the vocabulary, are errors.
  EXPECT_THROW(perplexity(model, test::some_tokens(31, 1, 512), o), InputError);
  EXPECT_THROW(model.logits({{1, 512}}), InputError);
}

}  // namespace
}  // namespace qz

namespace qz {
namespace {

TEST(EngineBlocks, InputsEachLinearSawMatchTheReferenceCapture) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  const std::vector<int32_t> a = test::some_tokens(11, 5, 512);
  std::map<std::string, std::vector<double>> ref;  // module -> concatenated inputs
  test::reference_logits(ck, m, std::vector<int>(a.begin(), a.end()), [&](const std::string& module, const test::Vec& x) {
    auto& r = ref[module];
    r.insert(r.end(), x.data(), x.data() + x.size());
  });
  const auto weights = ModelWeights::open(dir / "demo");
  const Transformer model(*weights, 2);
  HiddenStates h = model.embed({a});
  auto close = [](const std::vector<float>& ours, const std::vector<double>& theirs) {
    double num = 0, den = 0;
    for (size_t i = 0; i < theirs.size(); ++i) {
      num += (ours[i] - theirs[i]) * (ours[i] - theirs[i]);
      den += theirs[i] * theirs[i];
    }
    return ours.size() == theirs.size() && std::sqrt(num / den) < 1e-5;
  };
  for (uint32_t l = 0; l < m.block_count; ++l) {
    BlockInputs seen;
    model.run_block(l, h, &seen);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    EXPECT_TRUE(close(seen.attn_qkv, ref[p + "self_attn.q_proj"])) << l;
    // The attention output's columns: heads in llama.cpp's order are the same as HF's for o_proj's inputs.
    EXPECT_TRUE(close(seen.attn_output, ref[p + "self_attn.o_proj"])) << l;
    EXPECT_TRUE(close(seen.ffn_gate_up, ref[p + "mlp.gate_proj"])) << l;
    EXPECT_TRUE(close(seen.ffn_down, ref[p + "mlp.down_proj"])) << l;
  }
  EXPECT_EQ(model.head(h), model.logits({a}));
}

}  // namespace
}  // namespace qz
