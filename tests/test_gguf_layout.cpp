// The GGUF layout of what quantize writes: metadata as llama.cpp's converter writes it for the same checkpoint,
// how the file was made, and the stored parts of every format, read back by the same module.
#include <gtest/gtest.h>

#include <fstream>

#include "qz/calibration/calibration_set.hpp"
#include "qz/io/gguf.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/gguf_layout.hpp"
#include "qz/pipeline/quantize.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

const GgufValue& key(const GgufFile& g, const std::string& k) {
  const GgufValue* v = g.find(k);
  if (v == nullptr) throw std::runtime_error("missing key " + k);
  return *v;
}

std::string str(const GgufFile& g, const std::string& k) { return *key(g, k).get_if<std::string>(); }

TEST(GgufLayout, MetadataAsLlamaCppsConverterWritesIt) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  std::ofstream(dir / "demo" / "README.md") << "---\nlicense: apache-2.0\nlanguage: [en, de]\ntags:\n- demo\n"
                                               "base_model: meta-llama/Llama-3.2-1B\ndatasets:\n- roneneldan/TinyStories\n"
                                               "---\n# Demo\n";
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  QuantizeOptions o;
  o.type = "Q4_K_M";
  const Plan plan = make_plan(ck, o);
  quantize_to_gguf(ck, plan, dir / "q.gguf", false);
  const GgufFile g(dir / "q.gguf");
  EXPECT_EQ(str(g, "general.type"), "model");
  // 2 layers of 256 x 256 x 2 + 256 x 128 x 2 + 3 x 256 x 768, embeddings and head 512 x 256 each, 5 norms of 256.
  const uint64_t params = 2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 768 + 2 * 256) + 2 * 512 * 256 + 256;
  EXPECT_EQ(plan.weights, params);
  EXPECT_EQ(str(g, "general.size_label"), "1.8M");
  EXPECT_EQ(*key(g, "general.quantization_version").get_if<uint32_t>(), 2u);
  EXPECT_EQ(str(g, "tokenizer.ggml.pre"), "default");  // SentencePiece vocabularies, as the converter
  EXPECT_EQ(str(g, "general.license"), "apache-2.0");
  EXPECT_EQ(key(g, "general.languages").get_if<GgufArray>()->items.size(), 2u);
  EXPECT_EQ(key(g, "general.tags").get_if<GgufArray>()->items.size(), 1u);
  EXPECT_EQ(*key(g, "general.base_model.count").get_if<uint32_t>(), 1u);
  EXPECT_EQ(str(g, "general.base_model.0.name"), "Llama 3.2 1B");
  EXPECT_EQ(str(g, "general.base_model.0.organization"), "Meta Llama");
  EXPECT_EQ(str(g, "general.base_model.0.repo_url"), "https://huggingface.co/meta-llama/Llama-3.2-1B");
  EXPECT_EQ(str(g, "general.dataset.0.name"), "TinyStories");
  EXPECT_EQ(str(g, "general.dataset.0.organization"), "Roneneldan");
  EXPECT_EQ(str(g, "quantize.method"), "rtn");
  EXPECT_EQ(str(g, "quantize.target"), "Q4_K_M");
  EXPECT_EQ(*key(g, "general.file_type").get_if<uint32_t>(), 15u);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
}

TEST(GgufLayout, KeyAndValueLengthWhenTheConfigStatesHeadDim) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "demo" / "config.json"));
  cfg["head_dim"] = 64;  // the same as hidden / heads: the converter still writes both keys
  std::ofstream(dir / "demo" / "config.json") << cfg.dump();
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  QuantizeOptions o;
  o.type = "F16";
  quantize_to_gguf(ck, make_plan(ck, o), dir / "f.gguf", false);
  const GgufFile g(dir / "f.gguf");
  EXPECT_EQ(*key(g, "llama.attention.key_length").get_if<uint32_t>(), 64u);
  EXPECT_EQ(*key(g, "llama.attention.value_length").get_if<uint32_t>(), 64u);
  EXPECT_EQ(*key(g, "general.quantization_version").get_if<uint32_t>(), 2u);  // in every file
}

TEST(GgufLayout, TheFileSaysHowItWasMade) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  write_demo_calibration(dir / "calib.safetensors", {}, 96);
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const CalibrationSet calib({dir / "calib.safetensors"});
  QuantizeOptions o;
  set_method(o, "gptq");
  o.bits = 3;
  o.group_size = 64;
  o.damp = 0.05;
  o.act_order = true;
  quantize_to_gguf(ck, make_plan(ck, o, nullptr, {}, &calib), dir / "g.gguf", false);
  const GgufFile g(dir / "g.gguf");
  EXPECT_EQ(str(g, "quantize.method"), "gptq");
  EXPECT_EQ(str(g, "quantize.target"), "int3_asym_g64");
  EXPECT_EQ(*key(g, "quantize.bits").get_if<uint32_t>(), 3u);
  EXPECT_EQ(*key(g, "quantize.group_size").get_if<int32_t>(), 64);
  EXPECT_EQ(*key(g, "quantize.symmetric").get_if<bool>(), false);
  EXPECT_FLOAT_EQ(*key(g, "quantize.gptq.damp").get_if<float>(), 0.05f);
  EXPECT_EQ(*key(g, "quantize.gptq.act_order").get_if<bool>(), true);
  EXPECT_EQ(*key(g, "quantize.gptq.static_groups").get_if<bool>(), true);  // implied by act-order
  EXPECT_EQ(*key(g, "quantize.calibration.tokens").get_if<uint64_t>(), 96u);
  EXPECT_EQ(*key(g, "quantize.calibration.files").get_if<GgufArray>()->items[0].get_if<std::string>(),
            std::string("calib.safetensors"));
  EXPECT_EQ(*key(g, "general.quantization_version").get_if<uint32_t>(), 2u);  // also without llama.cpp types
}

TEST(GgufLayout, StoredPartsAreReadBackByTheSameModule) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  QuantizeOptions o;
  set_method(o, "nf4");
  o.tensor_types = {parse_tensor_type_override("attn_q=int6_sym_g64")};
  const Plan plan = make_plan(ck, o);
  quantize_to_gguf(ck, plan, dir / "n.gguf", false);
  const GgufFile g(dir / "n.gguf");
  const GgufTensorInfo* down = g.find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  const StoredTensor s = read_stored_tensor(g, *down);
  EXPECT_EQ(s.format->name(), "nf4_b64_dq");
  EXPECT_EQ(s.logical_ne, (std::vector<uint64_t>{768, 256}));
  ASSERT_EQ(s.parts.size(), 4u);
  EXPECT_EQ(s.parts[1]->name, "blk.0.ffn_down.weight.absmax");
  EXPECT_TRUE(is_side_part(g, *s.parts[1]));
  EXPECT_FALSE(is_side_part(g, *down));
  const StoredTensor q = read_stored_tensor(g, *g.find_tensor("blk.0.attn_q.weight"));
  EXPECT_EQ(q.format->name(), "int6_sym_g64");
  EXPECT_EQ(q.parts.size(), 1u);
  // Every planned byte is in the file, and the dequantized copy keeps the logical shapes.
  EXPECT_EQ(g.tensors().size(), plan.tensors.size() + 3 * 12);  // 12 NF4 linears (14 less attn_q) with 3 side parts
  EXPECT_EQ(dequantize_gguf(dir / "n.gguf", dir / "n.safetensors", DType::F32, false), plan.tensors.size());
  EXPECT_EQ(shape_string({768, 256}), "768 x 256");
}

}  // namespace
}  // namespace qz
