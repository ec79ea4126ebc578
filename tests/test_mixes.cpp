// llama-quantize's mixes and fallbacks, and tensor roles.
#include "qz/pipeline/mixes.hpp"

#include <gtest/gtest.h>

#include <map>

#include "qz/core/error.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/model/tensor_roles.hpp"
#include "qz/pipeline/plan.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

TEST(TensorRoles, HuggingFaceAndGgufNames) {
  const auto r = classify_tensor("model.layers.12.self_attn.v_proj.weight");
  EXPECT_EQ(r.role, TensorRole::AttnV);
  EXPECT_EQ(r.layer, 12);
  EXPECT_EQ(classify_tensor("blk.3.ffn_down.weight").role, TensorRole::FfnDown);
  EXPECT_EQ(classify_tensor("blk.3.ffn_down.weight").layer, 3);
  EXPECT_EQ(classify_tensor("blk.0.attn_qkv.weight").role, TensorRole::AttnQkv);
  EXPECT_EQ(classify_tensor("blk.0.attn_q.weight").role, TensorRole::AttnQ);
  EXPECT_EQ(classify_tensor("model.layers.0.mlp.gate_proj.weight").role, TensorRole::FfnGate);
  EXPECT_EQ(classify_tensor("model.layers.0.self_attn.o_proj.weight").role, TensorRole::AttnOutput);
  EXPECT_EQ(classify_tensor("lm_head.weight").role, TensorRole::Output);
  EXPECT_EQ(classify_tensor("token_embd.weight").role, TensorRole::TokenEmbedding);
  EXPECT_EQ(classify_tensor("model.layers.1.input_layernorm.weight").role, TensorRole::Norm);
  EXPECT_EQ(classify_tensor("blk.x.attn_v.weight").role, TensorRole::Other);
}

TEST(Mixes, UseMoreBitsForThirtyTwoLayers) {
  // llama.cpp: layers 0-3, 28-31 and every third layer in between (6, 9, ..., 27).
  std::vector<int> more;
  for (int i = 0; i < 32; ++i)
    if (use_more_bits(i, 32)) more.push_back(i);
  EXPECT_EQ(more, (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}));
}

TEST(Mixes, NamesAndAliases) {
  EXPECT_EQ(find_mix("q4_k")->id, MixId::Q4_K_M);
  EXPECT_EQ(find_mix("Q3_K")->id, MixId::Q3_K_M);
  EXPECT_EQ(find_mix("Q4_K_S")->file_type, 14u);
  EXPECT_EQ(find_mix("Q4_K_M")->file_type, 15u);
  EXPECT_EQ(find_mix("q8_0")->base, GgmlType::Q8_0);
  EXPECT_EQ(find_mix("Q9_K"), nullptr);
}

TEST(Mixes, RowLengthFallbacks) {
  EXPECT_EQ(row_length_fallback(GgmlType::Q4_K, 256), std::nullopt);
  EXPECT_EQ(row_length_fallback(GgmlType::Q4_K, 96), GgmlType::Q5_0);
  EXPECT_EQ(row_length_fallback(GgmlType::Q5_K, 96), GgmlType::Q5_1);
  EXPECT_EQ(row_length_fallback(GgmlType::Q6_K, 64), GgmlType::Q8_0);
  EXPECT_EQ(row_length_fallback(GgmlType::Q2_K, 64), GgmlType::Q4_0);
  EXPECT_EQ(row_length_fallback(GgmlType::Q3_K, 172), GgmlType::F16);  // 172 is not a multiple of 32 either
  EXPECT_EQ(row_length_fallback(GgmlType::Q8_0, 172), GgmlType::F16);
}

// The plan's type per tensor, by name (with `given` as the imatrix, or an empty one).
std::map<std::string, std::string> plan_types(const fs::path& ckpt, const std::string& type, bool imatrix = false,
                                              bool pure = false, const Imatrix* given = nullptr) {
  QuantizeOptions o;
  o.type = type;
  o.pure = pure;
  const Checkpoint ck = Checkpoint::open(ckpt);
  const Imatrix none;  // an imatrix changes some of llama-quantize's choices, whatever its entries
  const Imatrix* m = given ? given : imatrix ? &none : nullptr;
  const Plan p = make_plan(ck, o, m, "i.gguf");
  std::map<std::string, std::string> out;
  for (const auto& t : p.tensors) out[t.source_name()] = t.format->name();
  return out;
}

// An imatrix with an entry of ones for every 2-D weight of the checkpoint.
Imatrix ones_for(const fs::path& ckpt) {
  QuantizeOptions o;
  const Checkpoint ck = Checkpoint::open(ckpt);
  Imatrix m;
  for (const auto& t : make_plan(ck, o).tensors)
    if (t.shape.size() == 2) m.tensors[t.name] = ImatrixTensor{std::vector<float>(t.cols, 1.0f), {1.0f}};
  return m;
}

std::string layer(int i, const char* what) { return "model.layers." + std::to_string(i) + "." + what + ".weight"; }

class EightLayers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    DemoConfig c;
    c.layers = 8;
    c.intermediate = 256;
    write_demo_checkpoint(dir_->path() / "m", c);
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path ckpt() { return dir_->path() / "m"; }
  static test::TempDir* dir_;
};
test::TempDir* EightLayers::dir_ = nullptr;

TEST_F(EightLayers, Q4_K_M) {
  // llama.cpp with 8 layers: attn_v and ffn_down of blocks 0, 3, 6, 7 get Q6_K, the output head Q6_K, the rest Q4_K.
  const auto t = plan_types(ckpt(), "Q4_K_M");
  for (int i = 0; i < 8; ++i) {
    const bool more = i == 0 || i == 3 || i == 6 || i == 7;
    EXPECT_EQ(t.at(layer(i, "self_attn.v_proj")), more ? "Q6_K" : "Q4_K") << i;
    EXPECT_EQ(t.at(layer(i, "mlp.down_proj")), more ? "Q6_K" : "Q4_K") << i;
    EXPECT_EQ(t.at(layer(i, "self_attn.q_proj")), "Q4_K");
    EXPECT_EQ(t.at(layer(i, "mlp.up_proj")), "Q4_K");
    EXPECT_EQ(t.at(layer(i, "input_layernorm")), "F32");
  }
  EXPECT_EQ(t.at("lm_head.weight"), "Q6_K");
  EXPECT_EQ(t.at("model.embed_tokens.weight"), "Q4_K");
}

TEST_F(EightLayers, Q4_K_S_Q3_K_M_Q2_K_Q4_0) {
  auto t = plan_types(ckpt(), "Q4_K_S");
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(t.at(layer(i, "self_attn.v_proj")), i < 4 ? "Q5_K" : "Q4_K") << i;
    EXPECT_EQ(t.at(layer(i, "mlp.down_proj")), i < 1 ? "Q5_K" : "Q4_K") << i;
  }
  t = plan_types(ckpt(), "Q3_K_M");
  EXPECT_EQ(t.at(layer(1, "self_attn.v_proj")), "Q5_K");
  EXPECT_EQ(t.at(layer(2, "self_attn.v_proj")), "Q4_K");
  EXPECT_EQ(t.at(layer(5, "mlp.down_proj")), "Q4_K");
  EXPECT_EQ(t.at(layer(5, "self_attn.o_proj")), "Q4_K");
  EXPECT_EQ(t.at(layer(5, "self_attn.k_proj")), "Q3_K");
  t = plan_types(ckpt(), "Q2_K");  // the demo has 4 heads over 2 KV heads: n_gqa = 2 < 4
  EXPECT_EQ(t.at(layer(0, "self_attn.v_proj")), "Q3_K");
  EXPECT_EQ(t.at(layer(0, "mlp.down_proj")), "Q3_K");
  EXPECT_EQ(t.at(layer(0, "self_attn.o_proj")), "Q3_K");
  EXPECT_EQ(t.at(layer(0, "mlp.gate_proj")), "Q2_K");
  t = plan_types(ckpt(), "Q4_0");
  EXPECT_EQ(t.at(layer(0, "mlp.down_proj")), "Q4_0");
  EXPECT_EQ(t.at("lm_head.weight"), "Q6_K");  // even a Q4_0 file has a Q6_K output head
  t = plan_types(ckpt(), "Q4_0", /*imatrix=*/true);
  EXPECT_EQ(t.at(layer(0, "mlp.down_proj")), "Q4_1");
  EXPECT_EQ(t.at(layer(1, "mlp.down_proj")), "Q4_0");
  t = plan_types(ckpt(), "Q8_0");
  EXPECT_EQ(t.at("lm_head.weight"), "Q8_0");
  t = plan_types(ckpt(), "Q4_K_M", false, /*pure=*/true);
  EXPECT_EQ(t.at("lm_head.weight"), "Q4_K");
  EXPECT_EQ(t.at(layer(0, "self_attn.v_proj")), "Q4_K");
}

TEST_F(EightLayers, Q2_K_SNeedsAnImatrixAndGivesTheFirstEighthsFfnDownQ4_K) {
  EXPECT_EQ(find_mix("Q2_K_S")->file_type, 21u);
  EXPECT_THROW(plan_types(ckpt(), "Q2_K_S"), UsageError);  // llama-quantize refuses it without an imatrix too
  Imatrix m = ones_for(ckpt());
  const auto t = plan_types(ckpt(), "Q2_K_S", true, false, &m);
  EXPECT_EQ(t.at(layer(0, "mlp.down_proj")), "Q4_K");  // i < 8/8
  EXPECT_EQ(t.at(layer(1, "mlp.down_proj")), "Q2_K");
  EXPECT_EQ(t.at(layer(0, "self_attn.v_proj")), "Q2_K");  // n_gqa = 2: no more bits (Q2_K would give Q3_K)
  EXPECT_EQ(t.at(layer(0, "self_attn.o_proj")), "Q2_K");
  EXPECT_EQ(t.at("lm_head.weight"), "Q6_K");
  // ... and an entry for each of its Q2_K tensors (llama-quantize stops there too), but not for the head.
  m.tensors.erase("output.weight");
  EXPECT_NO_THROW(plan_types(ckpt(), "Q2_K_S", true, false, &m));
  m.tensors.erase("blk.5.ffn_up.weight");
  try {
    plan_types(ckpt(), "Q2_K_S", true, false, &m);
    ADD_FAILURE() << "a Q2_K tensor without an imatrix entry was planned";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no entry for 'blk.5.ffn_up.weight'"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(plan_types(ckpt(), "Q2_K", true, false, &m));  // (Q2_K itself needs none)
}

TEST(MixPlan, FallbacksAreCountedAndCanBeRefused) {
  test::TempDir dir;
  std::vector<SafetensorsBlob> blobs;
  auto add = [&](const std::string& name, uint64_t rows, uint64_t cols) {
    blobs.push_back({name, DType::F32, {rows, cols}, std::vector<uint8_t>(rows * cols * 4, 0)});
  };
  add("model.layers.0.mlp.down_proj.weight", 8, 96);   // Q4_K -> Q5_0
  add("model.layers.0.mlp.up_proj.weight", 8, 172);    // Q4_K -> F16
  add("model.layers.0.mlp.gate_proj.weight", 8, 256);  // fits
  write_safetensors(dir / "m.safetensors", blobs);
  QuantizeOptions o;
  o.type = "Q4_K_S";
  const Plan p = make_plan(Checkpoint::open(dir / "m.safetensors"), o);
  EXPECT_EQ(p.tensors[0].format->name(), "Q5_0");
  EXPECT_EQ(p.tensors[1].format->name(), "F16");
  EXPECT_EQ(p.tensors[2].format->name(), "Q4_K");
  EXPECT_EQ(p.fallbacks, 2u);
  EXPECT_EQ(p.fallback_bytes, 8u * 3 * 22 + 8u * 172 * 2);
  EXPECT_EQ(p.file_type, 14u);
  o.no_fallback = true;
  test::expect_error<InputError>([&] { make_plan(Checkpoint::open(dir / "m.safetensors"), o); },
                                 {"down_proj", "row length 96", "Q4_K", "--no-fallback"});
}

TEST(MixPlan, TiedEmbeddingTakesTheOutputType) {
  test::TempDir dir;
  write_safetensors(dir / "m.safetensors",
                    {{"model.embed_tokens.weight", DType::F32, {4, 256}, std::vector<uint8_t>(4 * 256 * 4, 0)},
                     {"model.layers.0.mlp.up_proj.weight", DType::F32, {4, 256}, std::vector<uint8_t>(4 * 256 * 4, 0)}});
  const auto t = plan_types(dir / "m.safetensors", "Q4_K_M");
  EXPECT_EQ(t.at("model.embed_tokens.weight"), "Q6_K");
  EXPECT_EQ(t.at("model.layers.0.mlp.up_proj.weight"), "Q4_K");
}

}  // namespace
}  // namespace qz
