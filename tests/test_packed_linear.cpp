// GPTQ and AWQ checkpoints in (model/packed_linear.hpp): packed by the tests' own packer (packed_checkpoint.hpp),
// converted to GGUF. Grids a llama.cpp type holds exactly keep their codes (Q4_0, Q8_0 exactly; Q4_1 up to the fp16
// rounding of its min); the others are decoded and quantized to --type with a warning; bad input is named.
#include <gtest/gtest.h>

#include "packed_checkpoint.hpp"
#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/formats/nf4.hpp"
#include "qz/io/gguf.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

class PackedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override { write_demo_checkpoint(dir_ / "demo"); }

  // Packs the demo with `s` (every linear), writes the float checkpoint of the values the packed one stands for,
  // and converts both: the packed one as `type` (empty: the default), the float one as F32.
  Report convert(const test::PackSpec& s, const std::string& type = "") {
    const auto codes = test::write_packed_checkpoint(dir_ / "demo", dir_ / "packed", s,
                                                     [&](const std::string&, const std::vector<float>& w, size_t out, size_t in) {
                                                       return std::optional<test::LinearCodes>(test::rtn_codes(w, out, in, s));
                                                     });
    // The values the packed checkpoint stands for, as a float checkpoint.
    fs::create_directories(dir_ / "truth");
    const Checkpoint demo = Checkpoint::open(dir_ / "demo");
    std::vector<SafetensorsBlob> blobs;
    for (const auto& e : demo.tensors()) {
      const auto it = codes.find(e.tensor->name);
      if (it == codes.end()) {
        const auto b = e.bytes();
        blobs.push_back({e.tensor->name, e.tensor->dtype, e.tensor->shape, std::vector<uint8_t>(b.begin(), b.end())});
        continue;
      }
      const test::LinearCodes& c = it->second;
      std::vector<float> v(c.out * c.in);
      for (size_t j = 0; j < c.out; ++j)
        for (size_t i = 0; i < c.in; ++i) v[j * c.in + i] = c.value(j, i);
      std::vector<uint8_t> bytes(v.size() * 4);
      std::memcpy(bytes.data(), v.data(), bytes.size());
      blobs.push_back({e.tensor->name, DType::F32, e.tensor->shape, bytes});
    }
    write_safetensors(dir_ / "truth" / "model.safetensors", blobs);
    for (const char* f : {"config.json", "tokenizer.model"}) fs::copy_file(dir_ / "demo" / f, dir_ / "truth" / f, fs::copy_options::overwrite_existing);
    QuantizeJob t;
    t.inputs = {dir_ / "truth"};
    t.output = dir_ / "truth.gguf";
    t.options.type = "F32";
    t.force = true;
    run_quantize(t);
    QuantizeJob j;
    j.inputs = {dir_ / "packed"};
    j.output = dir_ / "out.gguf";
    j.options.type = type;
    j.force = true;
    warnings_.clear();
    QuantizeEvents ev;
    ev.warn = [&](const std::string& w) { warnings_.push_back(w); };
    return run_quantize(j, ev);
  }

  // Largest |stored - truth| over a linear of the output, and the truth's largest |value|.
  std::pair<double, double> deviation(const std::string& name) const {
    const GgufFile out(dir_ / "out.gguf"), truth(dir_ / "truth.gguf");
    const auto a = dequantize_tensor(out, *out.find_tensor(name)), b = dequantize_tensor(truth, *truth.find_tensor(name));
    double worst = 0, big = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
      big = std::max(big, std::fabs(static_cast<double>(b[i])));
    }
    return {worst, big};
  }
  GgmlType type_of(const std::string& name) const { return GgufFile(dir_ / "out.gguf").find_tensor(name)->type; }
  bool warned(const std::string& part) const {
    return std::any_of(warnings_.begin(), warnings_.end(), [&](const std::string& w) { return w.find(part) != std::string::npos; });
  }

  test::TempDir dir_;
  std::vector<std::string> warnings_;
};

TEST_F(PackedCheckpoint, GptqSymmetric4BitCarriesOverIntoQ4_0Exactly) {
  test::PackSpec s;  // GPTQ v1, 4-bit, groups of 128, symmetric
  const Report r = convert(s);
  for (const char* n : {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.ffn_down.weight"}) {
    SCOPED_TRACE(n);
    EXPECT_EQ(type_of(n), GgmlType::Q4_0);
    EXPECT_EQ(deviation(n).first, 0.0);  // the same values, q/k rows in llama.cpp's order
  }
  EXPECT_FALSE(warned("cannot carry over"));
  EXPECT_EQ(r.tensors.size(), 21u);
}

TEST_F(PackedCheckpoint, GptqV2WithZeroPointsCarriesOverIntoQ4_1UpToTheRoundingOfItsMin) {
  test::PackSpec s;
  s.format = "gptq_v2";
  s.sym = false;
  s.group = 32;
  const Report r = convert(s);
  const auto [worst, big] = deviation("blk.0.ffn_up.weight");
  EXPECT_EQ(type_of("blk.0.ffn_up.weight"), GgmlType::Q4_1);
  EXPECT_LE(worst, big * 0x1p-11);  // |m| <= max |w| of the group; fp16 rounds m by at most 2^-11 relative
  EXPECT_GT(worst, 0.0);            // (and it does move some)
  for (const auto& t : r.tensors)  // the report's error is that deviation
    if (t.name == "blk.0.ffn_up.weight") EXPECT_NEAR(t.error.max_abs_error, worst, 1e-9);
}

TEST_F(PackedCheckpoint, Gptq8BitSymmetricIsQ8_0AndAwqIsQ4_1) {
  test::PackSpec s;
  s.bits = 8;
  convert(s);
  EXPECT_EQ(type_of("blk.1.attn_v.weight"), GgmlType::Q8_0);
  EXPECT_EQ(deviation("blk.1.attn_v.weight").first, 0.0);

  test::PackSpec a;
  a.method = "awq";
  a.sym = false;
  convert(a);
  EXPECT_EQ(type_of("blk.0.attn_output.weight"), GgmlType::Q4_1);
  const auto [worst, big] = deviation("blk.0.attn_output.weight");
  EXPECT_LE(worst, big * 0x1p-11);
}

// 3-bit codes and act-order groups have no llama.cpp block: decoded, then quantized to --type (Q8_0 by default), as
// the same values from a float checkpoint would be, with a warning saying why.
TEST_F(PackedCheckpoint, GridsLlamaCppCannotHoldAreDecodedThenQuantizedWithAWarning) {
  for (const bool act_order : {false, true}) {
    test::PackSpec s;
    s.bits = act_order ? 4 : 3;
    s.sym = false;
    s.desc_act = act_order;
    convert(s);
    SCOPED_TRACE(act_order ? "act-order" : "3-bit");
    EXPECT_TRUE(warned(act_order ? "act-order" : "no 3-bit block")) << (warnings_.empty() ? "" : warnings_.front());
    QuantizeJob q8;
    q8.inputs = {dir_ / "truth"};
    q8.output = dir_ / "truth-q8.gguf";
    q8.force = true;
    run_quantize(q8);
    const GgufFile out(dir_ / "out.gguf"), want(dir_ / "truth-q8.gguf");
    for (const char* n : {"blk.0.attn_q.weight", "blk.1.ffn_gate.weight"}) {
      const auto x = out.data(*out.find_tensor(n)), y = want.data(*want.find_tensor(n));
      EXPECT_EQ(out.find_tensor(n)->type, GgmlType::Q8_0);
      EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << n;
    }
  }
}

// bitsandbytes 4-bit in: the layout --output-format bnb (and transformers) writes, decoded block by block with the
// file's own code tables: the values bitsandbytes' NF4 dequantization gives (formats/nf4.hpp's), with and without
// double quantization, then quantized to --type with a warning.
TEST_F(PackedCheckpoint, Bitsandbytes4BitIsDecodedToTheValuesNf4DequantizationGives) {
  for (const bool dq : {true, false}) {
    SCOPED_TRACE(dq ? "double quant" : "float absmax");
    QuantizeJob b;
    b.inputs = {dir_ / "demo"};
    b.output = dir_ / (dq ? "bnb-dq" : "bnb");
    set_method(b.options, "nf4");
    b.options.double_quant = dq;
    b.output_format = "bnb";
    b.force = true;
    run_quantize(b);
    QuantizeJob j;
    j.inputs = {b.output};
    j.output = dir_ / "from-bnb.gguf";
    j.options.type = "F32";
    j.force = true;
    std::vector<std::string> warnings;
    QuantizeEvents ev;
    ev.warn = [&](const std::string& w) { warnings.push_back(w); };
    const Report r = run_quantize(j, ev);
    EXPECT_TRUE(std::any_of(warnings.begin(), warnings.end(), [](const std::string& w) { return w.find("bitsandbytes nf4") != std::string::npos; }));
    EXPECT_EQ(r.tensors.size(), 21u);
    const GgufFile g(j.output);
    const Checkpoint demo = Checkpoint::open(dir_ / "demo");
    Nf4Options o;
    o.double_quant = dq;
    for (const char* hf : {"model.layers.0.self_attn.v_proj.weight", "model.layers.1.mlp.down_proj.weight"}) {
      const Checkpoint::Entry* e = demo.find(hf);
      std::vector<float> w(e->tensor->numel()), want(w.size());
      convert_to_f32(e->bytes().data(), e->tensor->dtype, w.data(), w.size());
      dequantize_nf4(quantize_nf4(w.data(), w.size(), o), o, want.data());
      const std::string gguf = std::string(hf).find("v_proj") != std::string::npos ? "blk.0.attn_v.weight" : "blk.1.ffn_down.weight";
      EXPECT_EQ(dequantize_tensor(g, *g.find_tensor(gguf)), want) << hf;
    }
  }
}

TEST_F(PackedCheckpoint, AConfigThatDisagreesWithTheTensorsOrAnUnknownMethodIsAnErrorNamingIt) {
  test::PackSpec s;
  convert(s);
  const fs::path cfg = dir_ / "packed" / "config.json";
  nlohmann::json config = nlohmann::json::parse(std::ifstream(cfg));
  auto expect_error = [&](const nlohmann::json& q, const std::string& part) {
    config["quantization_config"] = q;
    std::ofstream(cfg) << config.dump();
    QuantizeJob j;
    j.inputs = {dir_ / "packed"};
    j.output = dir_ / "bad.gguf";
    j.force = true;
    try {
      run_quantize(j);
      ADD_FAILURE() << "accepted: " << q.dump();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  nlohmann::json q = test::quantization_config(s);
  q["bits"] = 8;  // the tensors hold 4-bit codes
  expect_error(q, "qzeros");
  q = test::quantization_config(s);
  q["group_size"] = 64;
  expect_error(q, "scales");
  q["quant_method"] = "bitsandbytes";
  expect_error(q, "load_in_4bit");
  q["quant_method"] = "hqq";
  expect_error(q, "quant_method 'hqq'");
  q = test::quantization_config(s);
  q["bits"] = "4";
  expect_error(q, "quantization_config.bits");
  config["quantization_config"] = test::quantization_config(s);
  std::ofstream(cfg) << config.dump();
  QuantizeJob g;
  g.inputs = {dir_ / "packed"};
  g.output = dir_ / "bad.gguf";
  set_method(g.options, "gptq");
  g.calib = {dir_ / "demo" / "calib.txt"};
  try {  // already quantized: GPTQ would round it a second time
    run_quantize(g);
    ADD_FAILURE() << "GPTQ ran on a GPTQ checkpoint";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("GPTQ 4-bit groups of 128"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qz
