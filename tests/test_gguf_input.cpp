// A GGUF model as input (io/gguf_tensor_file.hpp, io/checkpoint.hpp, pipeline/plan.hpp): quantized as llama-quantize
// quantizes it, its metadata carried over, --override-kv, quantized input only with --allow-requantize, and the
// calibrated methods running the model from the GGUF itself.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/io/checkpoint.hpp"
#include "qz/io/gguf.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/mixes.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "qz/pipeline/quantize_config.hpp"
#include "gguf_rewrite.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

Report make(const fs::path& in, const fs::path& out, QuantizeOptions o) {
  QuantizeJob job;
  job.inputs = {in};
  job.output = out;
  job.options = std::move(o);
  job.force = true;
  return run_quantize(job);
}

QuantizeOptions typed(const std::string& type) {
  QuantizeOptions o;
  o.type = type;
  return o;
}

std::string str(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  return v && v->get_if<std::string>() ? *v->get_if<std::string>() : "";
}

enum class Order { Same, Any };

// The same tensors (names, types, shapes, bytes), in the same order or, with Order::Any, by name whatever their
// order (llama_model_quantize writes the tensors in its own order, by block).
void expect_same_tensors(const GgufFile& a, const GgufFile& b, Order order = Order::Same) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const auto& x = a.tensors()[i];
    SCOPED_TRACE(x.name);
    if (order == Order::Same) EXPECT_EQ(x.name, b.tensors()[i].name);
    const auto* y = order == Order::Same ? &b.tensors()[i] : b.find_tensor(x.name);
    ASSERT_NE(y, nullptr);
    EXPECT_EQ(x.type, y->type);
    EXPECT_EQ(x.ne, y->ne);
    const auto dx = a.data(x), dy = b.data(*y);
    EXPECT_TRUE(std::equal(dx.begin(), dx.end(), dy.begin(), dy.end()));
  }
}

class GgufInput : public ::testing::Test {
 protected:
  void SetUp() override {
    DemoConfig c;
    c.dtype = DType::F16;  // so that the F16 GGUF holds exactly the checkpoint's values
    write_demo_checkpoint(dir_ / "demo", c);
    make(dir_ / "demo", f16(), typed("F16"));
  }
  fs::path f16() const { return dir_ / "model-f16.gguf"; }
  test::TempDir dir_;
};

// llama-quantize's use: every preset from the F16 GGUF gives the tensors the same preset gives from the Hugging Face
// checkpoint (whose bytes the format and mix tests check against llama.cpp's own quantizers), with the file type.
TEST_F(GgufInput, EveryPresetFromAnF16GgufEqualsTheSamePresetFromTheCheckpoint) {
  for (const Mix& m : mixes()) {
    if (m.id == MixId::Q2_K_S) continue;  // (needs an imatrix: the test against llama.cpp below covers it)
    SCOPED_TRACE(std::string(m.name));
    const fs::path a = dir_ / "from-gguf.gguf", b = dir_ / "from-checkpoint.gguf";
    make(f16(), a, typed(std::string(m.name)));
    make(dir_ / "demo", b, typed(std::string(m.name)));
    const GgufFile ga(a), gb(b);
    expect_same_tensors(ga, gb);
    const GgufValue* ft = ga.find("general.file_type");
    ASSERT_NE(ft, nullptr);
    EXPECT_EQ(*ft->get_if<uint32_t>(), m.file_type);
    EXPECT_EQ(str(ga, "general.architecture"), "llama");
    EXPECT_EQ(str(ga, "tokenizer.ggml.model"), str(gb, "tokenizer.ggml.model"));
  }
}

// Against llama.cpp itself: llama_model_quantize (what llama-quantize runs) on the same F16 GGUF of an eight-block
// model (so that the mixes' per-layer choices show), Llama and Qwen3, every preset, without and with an imatrix from
// calibration text, gives the tensors (names, types, shapes, bytes) this tool writes.
TEST(GgufInputAgainstLlamaCpp, EveryPresetGivesLlamaQuantizesTensorBytesWithAndWithoutAnImatrix) {
  const std::string helper = QZ_LLAMA_QUANTIZE_REF;
  if (helper.empty()) GTEST_SKIP() << "node-llama-cpp's libllama is absent (npm install in tests/integration): no llama_quantize_ref";
  // Two query heads per KV head, then four (where Q2_K and Q2_K_S give attn_v Q4_K); then Qwen3, with its Q/K norms
  // and a head size of its own (q and attn_output 512 wide against a hidden size of 256).
  struct Model {
    const char* architecture;
    int kv_heads, head_dim;
  };
  for (const Model model : {Model{"LlamaForCausalLM", 2, 0}, Model{"LlamaForCausalLM", 1, 0}, Model{"Qwen3ForCausalLM", 2, 128}}) {
    const int kv_heads = model.kv_heads;
    SCOPED_TRACE(fmt::format("{}, {} KV heads", model.architecture, kv_heads));
    test::TempDir dir;
    DemoConfig c;
    c.architecture = model.architecture;
    c.head_dim = model.head_dim;
    c.dtype = DType::F16;
    c.layers = 8;
    c.intermediate = 512;
    c.kv_heads = kv_heads;
    write_demo_checkpoint(dir / "demo", c);
    write_demo_calibration_text(dir / "calib.txt");
    const fs::path f16 = dir / "f16.gguf", imatrix = dir / "imatrix.gguf";
    make(dir / "demo", f16, typed("F16"));
    ImatrixJob ij;
    ij.model = f16;
    ij.calib = {dir / "calib.txt"};
    ij.output = imatrix;
    ij.ctx = 128;
    run_imatrix(ij);
    std::map<bool, std::vector<uint8_t>> q4_k_m_attn_q;  // (the imatrix must change what both sides write)
    std::map<std::string, GgmlType> q2_k_attn_v;        // by preset
    for (const bool with_imatrix : {false, true})
      for (const Mix& m : mixes()) {
        SCOPED_TRACE(fmt::format("{}{}", m.name, with_imatrix ? " with an imatrix" : ""));
        const fs::path ours = dir / "ours.gguf", theirs = dir / "theirs.gguf";
        std::string cmd = fmt::format("{} {} {} {} 2", helper, f16.string(), theirs.string(), m.file_type);
        if (with_imatrix) cmd += " " + imatrix.string();
        QuantizeJob job;
        job.inputs = {f16};
        job.output = ours;
        job.options = typed(std::string(m.name));
        if (with_imatrix) job.imatrix = imatrix;
        job.force = true;
        if (m.id == MixId::Q2_K_S && !with_imatrix) {  // both refuse Q2_K_S without an importance matrix
          EXPECT_NE(std::system((cmd + " > /dev/null 2>&1").c_str()), 0) << cmd;
          EXPECT_THROW(run_quantize(job), UsageError);
          continue;
        }
        ASSERT_EQ(std::system((cmd + " > /dev/null 2>&1").c_str()), 0) << cmd;
        run_quantize(job);
        const GgufFile a(ours), b(theirs);
        expect_same_tensors(a, b, Order::Any);
        if (m.name == "Q4_K_M") {
          const auto d = b.data(*b.find_tensor("blk.0.attn_q.weight"));
          q4_k_m_attn_q[with_imatrix].assign(d.begin(), d.end());
        }
        if (with_imatrix && (m.id == MixId::Q2_K || m.id == MixId::Q2_K_S))
          q2_k_attn_v[std::string(m.name)] = b.find_tensor("blk.3.attn_v.weight")->type;
        EXPECT_EQ(*a.find("general.file_type")->get_if<uint32_t>(), *b.find("general.file_type")->get_if<uint32_t>());
      }
    ASSERT_EQ(q4_k_m_attn_q.size(), 2u);
    EXPECT_NE(q4_k_m_attn_q[false], q4_k_m_attn_q[true]);
    // The grouped-query rule showed: attn_v of Q2_K is Q3_K, of Q2_K_S Q2_K, and both Q4_K with four heads per KV head.
    EXPECT_EQ(q2_k_attn_v["Q2_K"], kv_heads == 1 ? GgmlType::Q4_K : GgmlType::Q3_K);
    EXPECT_EQ(q2_k_attn_v["Q2_K_S"], kv_heads == 1 ? GgmlType::Q4_K : GgmlType::Q2_K);
  }
}

TEST_F(GgufInput, MetadataIsCarriedOverWithTheQuantizationKeysRewrittenAndOverrides) {
  // An input with a key of its own, split keys and this tool's keys from an earlier run.
  test::rewrite_gguf(f16(), dir_ / "tagged.gguf", [](const GgufKv& kv, GgufWriter& w) { w.set(kv.key, kv.value); },
                     [](GgufWriter& w) {
                       w.set("my.custom.key", std::string("kept"));
                       w.set("split.count", static_cast<uint16_t>(1));
                       w.set("quantize.method", std::string("stale"));
                     });
  QuantizeOptions o = typed("Q4_0");
  o.override_kv = {"general.name=str:renamed", "llama.context_length=int:4096", "my.flag=bool:true", "my.f=float:0.5"};
  make(dir_ / "tagged.gguf", dir_ / "q.gguf", o);
  const GgufFile g(dir_ / "q.gguf");
  EXPECT_EQ(str(g, "my.custom.key"), "kept");
  EXPECT_EQ(g.find("split.count"), nullptr);
  EXPECT_EQ(str(g, "quantize.method"), "rtn");
  EXPECT_EQ(str(g, "general.name"), "renamed");
  ASSERT_NE(g.find("llama.context_length"), nullptr);
  EXPECT_EQ(*g.find("llama.context_length")->get_if<uint32_t>(), 4096u);  // u32, as llama-quantize writes ints
  EXPECT_EQ(*g.find("my.flag")->get_if<bool>(), true);
  EXPECT_EQ(*g.find("my.f")->get_if<float>(), 0.5f);
  EXPECT_EQ(*g.find("general.file_type")->get_if<uint32_t>(), find_mix("Q4_0")->file_type);
  // Every key of the input is there (but the rewritten ones), in the input's order.
  const GgufFile in(f16());
  for (const auto& kv : in.metadata()) EXPECT_NE(g.find(kv.key), nullptr) << kv.key;

  for (const char* bad : {"nokey", "=int:1", "k=int", "k=int:x", "k=int:1.5", "k=float:nan", "k=bool:yes", "k=blob:1",
                          "general.alignment=int:64"})
    EXPECT_THROW(parse_override_kv(bad), UsageError) << bad;
}

// A quantized input is refused (naming the file, tensor and type) unless --allow-requantize; then each tensor is
// decoded and quantized again: exactly the target's rounding of the decoded values, with a warning.
TEST_F(GgufInput, AQuantizedInputNeedsAllowRequantizeAndIsDecodedThenQuantized) {
  make(f16(), dir_ / "q8.gguf", typed("Q8_0"));
  try {
    make(dir_ / "q8.gguf", dir_ / "q4.gguf", typed("Q4_0"));
    FAIL() << "requantized without --allow-requantize";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("q8.gguf"), std::string::npos) << m;
    EXPECT_NE(m.find("Q8_0"), std::string::npos) << m;
    EXPECT_NE(m.find("--allow-requantize"), std::string::npos) << m;
  }
  QuantizeOptions o = typed("Q4_0");
  o.allow_requantize = true;
  o.pure = true;
  const Checkpoint ck = Checkpoint::open(dir_ / "q8.gguf");
  const Plan plan = make_plan(ck, o);
  EXPECT_TRUE(std::any_of(plan.config.warnings.begin(), plan.config.warnings.end(),
                          [](const std::string& w) { return w.find("compound") != std::string::npos; }));
  quantize_to_gguf(ck, plan, dir_ / "q4.gguf", true);
  const GgufFile q8(dir_ / "q8.gguf"), q4(dir_ / "q4.gguf");
  const auto* t8 = q8.find_tensor("blk.0.attn_q.weight");
  const auto* t4 = q4.find_tensor("blk.0.attn_q.weight");
  ASSERT_TRUE(t8 && t4);
  ASSERT_EQ(t8->type, GgmlType::Q8_0);
  ASSERT_EQ(t4->type, GgmlType::Q4_0);
  const size_t n = t8->ne[0], rows = t8->ne[1];
  const auto q8f = format_for_ggml_type(GgmlType::Q8_0), q4f = format_for_ggml_type(GgmlType::Q4_0);
  std::vector<float> row(n);
  std::vector<uint8_t> want(q4f->row_bytes(n));
  for (size_t r = 0; r < rows; ++r) {
    q8f->dequantize_row(q8.data(*t8).data() + r * q8f->row_bytes(n), row.data(), n);
    q4f->quantize_row(row.data(), want.data(), n, nullptr);
    ASSERT_TRUE(std::equal(want.begin(), want.end(), q4.data(*t4).begin() + static_cast<std::ptrdiff_t>(r * want.size())))
        << "row " << r;
  }
}

// GPTQ from text, run by the engine on the GGUF: the same file as from the checkpoint the GGUF was made from.
TEST_F(GgufInput, GptqFromTextRunsTheModelFromTheGgufAndMatchesTheCheckpointsRun) {
  write_demo_calibration_text(dir_ / "calib.txt", 120);
  for (const fs::path& in : {f16(), dir_ / "demo"}) {
    QuantizeJob job;
    job.inputs = {in};
    job.output = dir_ / (in == f16() ? "g-gguf.gguf" : "g-ckpt.gguf");
    set_method(job.options, "gptq");
    job.options.type = "Q4_0";
    job.calib = {dir_ / "calib.txt"};
    job.sampling.samples = 8;
    job.sampling.seqlen = 64;
    job.force = true;
    const Report r = run_quantize(job);
    ASSERT_TRUE(r.calibration);
    EXPECT_EQ(r.calibration->kind, "text");
  }
  expect_same_tensors(GgufFile(dir_ / "g-gguf.gguf"), GgufFile(dir_ / "g-ckpt.gguf"));
}

// A split GGUF is read as one model: quantized from its first part it gives the file the unsplit GGUF gives, and
// the engine evaluates it.
TEST_F(GgufInput, ASplitGgufIsReadAsOneModel) {
  QuantizeOptions s = typed("F16");
  s.split_max_size = "300K";
  const Report parts = make(dir_ / "demo", dir_ / "split.gguf", s);
  ASSERT_GT(parts.output_parts.size(), 2u);
  make(parts.output_parts.front(), dir_ / "from-split.gguf", typed("Q4_K_M"));
  make(f16(), dir_ / "from-whole.gguf", typed("Q4_K_M"));
  expect_same_tensors(GgufFile(dir_ / "from-split.gguf"), GgufFile(dir_ / "from-whole.gguf"));
  EXPECT_EQ(GgufFile(dir_ / "from-split.gguf").find("split.count"), nullptr);
  // Writing over one of its own parts is refused.
  QuantizeOptions again = typed("F16");
  again.split_max_size = "300K";
  EXPECT_THROW(make(parts.output_parts.front(), dir_ / "split.gguf", again), UsageError);
}

TEST_F(GgufInput, AnArchitectureTheEngineDoesNotRunIsStillQuantizedToNearestButNotCalibrated) {
  test::rewrite_gguf(f16(), dir_ / "mystery.gguf", [](const GgufKv& kv, GgufWriter& w) {
    std::string key = kv.key;
    if (key.starts_with("llama.")) key = "mystery." + key.substr(6);
    w.set(key, key == "general.architecture" ? GgufValue(std::string("mystery")) : kv.value);
  });
  make(dir_ / "mystery.gguf", dir_ / "m-q4.gguf", typed("Q4_K_M"));
  EXPECT_EQ(str(GgufFile(dir_ / "m-q4.gguf"), "general.architecture"), "mystery");
  QuantizeOptions g;
  set_method(g, "awq");
  g.type = "Q4_0";
  try {
    make_plan(Checkpoint::open(dir_ / "mystery.gguf"), g, nullptr, {}, nullptr, true);
    FAIL() << "AWQ planned without a model the engine runs";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("mystery"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qz
