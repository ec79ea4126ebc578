// AWQ over whole (demo) models: the folding keeps the float model's function exactly, the quantized model is closer
// to the float one than round-to-nearest, grouped-query attention leaves v -> o alone, clipping spares q and k,
// awq+gptq's rescaled Hessian measures the true output error, and bad calibration input is refused by name.
// The truth is the reference forward pass (tests/reference_forward.hpp) with activations it captured itself.
#include "qz/pipeline/awq_pass.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "qz/core/error.hpp"
#include "qz/core/random.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/calibration/statistics.hpp"
#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/quantize.hpp"
#include "reference_forward.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;
using test::Mat;

std::vector<std::vector<int>> random_sequences(size_t n, size_t len, int vocab, uint64_t seed) {
  XorShift64 rng(seed);
  std::vector<std::vector<int>> out(n);
  for (auto& s : out)
    for (size_t i = 0; i < len; ++i) s.push_back(static_cast<int>(rng.next() % static_cast<uint64_t>(vocab)));
  return out;
}

// Relative RMS of a - b over all positions and sequences.
double relative_rms(const std::vector<std::vector<std::vector<double>>>& a,
                    const std::vector<std::vector<std::vector<double>>>& b) {
  double num = 0, den = 0;
  for (size_t s = 0; s < a.size(); ++s)
    for (size_t p = 0; p < a[s].size(); ++p)
      for (size_t i = 0; i < a[s][p].size(); ++i) {
        num += std::pow(a[s][p][i] - b[s][p][i], 2);
        den += std::pow(b[s][p][i], 2);
      }
  return std::sqrt(num / den);
}

// A demo model, the activations it really computes (captured by the reference forward pass) as calibration file.
struct Model {
  test::TempDir dir;
  std::optional<Checkpoint> ck;
  ModelConfig config;
  fs::path calib_file;
  explicit Model(DemoConfig c = {}) {
    write_demo_checkpoint(dir / "model", c);
    ck.emplace(Checkpoint::open(dir / "model"));
    config = parse_model_config(*ck->config(), "config.json", "demo");
    calib_file = dir / "calib.safetensors";
    test::write_captured_calibration(*ck, config, random_sequences(8, 32, c.vocab, 7), calib_file);
  }
};

QuantizeOptions awq_options(const std::string& type, bool clip) {
  QuantizeOptions o;
  o.method = Method::Awq;
  o.type = type;
  o.awq_clip = clip;
  return o;
}

// The weights as a plan stores them (after the AWQ transform), in the checkpoint's row order, by Hugging Face
// name: `quantized` decodes what the quantizer writes, else the float values it would quantize.
test::WeightFn plan_weights(const Plan& plan, bool quantized) {
  return [&plan, quantized](const std::string& name) {
    const auto it = std::find_if(plan.tensors.begin(), plan.tensors.end(),
                                 [&](const TensorPlan& t) { return t.source_name() == name; });
    if (it == plan.tensors.end()) throw std::runtime_error("no " + name);
    const TensorPlan& t = *it;
    std::vector<float> v = read_finite_tensor(t);
    if (quantized) {
      const QuantizedTensor q = quantize_tensor(t, plan.config);
      const size_t rb = t.format->row_bytes(t.cols);
      for (size_t r = 0; r < t.rows; ++r) t.format->dequantize_row(q.parts[0].data() + r * rb, v.data() + r * t.cols, t.cols);
    }
    const bool vector = t.shape.size() == 1;
    Mat m(vector ? static_cast<Eigen::Index>(t.cols) : static_cast<Eigen::Index>(t.rows),
          vector ? 1 : static_cast<Eigen::Index>(t.cols));
    for (size_t r = 0; r < t.rows; ++r) {
      const size_t src = t.row_order.empty() ? r : t.row_order[r];
      for (size_t c = 0; c < t.cols; ++c) {
        if (vector) m(static_cast<Eigen::Index>(c), 0) = v[c];
        else m(static_cast<Eigen::Index>(src), static_cast<Eigen::Index>(c)) = v[r * t.cols + c];
      }
    }
    return m;
  };
}

std::vector<std::vector<std::vector<double>>> logits_of(const test::WeightFn& w, const Model& m,
                                                       const std::vector<std::vector<int>>& seqs) {
  std::vector<std::vector<std::vector<double>>> out;
  for (const auto& s : seqs) out.push_back(test::reference_logits(w, m.config, s, m.ck->find("lm_head.weight") != nullptr));
  return out;
}

const AwqGroupReport* group_of(const AwqReport& r, const std::string& prev) {
  for (const auto& g : r.groups)
    if (g.prev == prev) return &g;
  return nullptr;
}

TEST(AwqPass, FoldingKeepsTheFloatModelsFunction) {
  for (const char* arch : {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}) {
    SCOPED_TRACE(arch);
    DemoConfig c;
    c.architecture = arch;
    if (std::string(arch) == "Qwen3ForCausalLM") c.head_dim = 128;  // Q/K norms act on q/k's outputs: scaling stays exact
    c.kv_heads = c.heads;  // no grouped-query attention: v -> o is scaled too
    const Model m(c);
    const QuantizeOptions o = awq_options("Q4_0", false);
    const CalibrationSet calib({m.calib_file});
    Plan plan = make_plan(*m.ck, o, nullptr, {}, &calib);
    const AwqReport r = apply_awq(plan, calib);
    ASSERT_EQ(r.groups.size(), 4u * static_cast<size_t>(c.layers));
    for (const auto& g : r.groups) {
      EXPECT_TRUE(g.skipped.empty()) << g.prev << ": " << g.skipped;
      EXPECT_GT(g.alpha, 0.0) << g.prev;  // salient channels: real scales, so the test below is not trivial
      EXPECT_LE(g.loss, g.loss_unscaled) << g.prev;
      EXPECT_EQ(g.tokens, 8u * 32u);
    }
    const auto eval = random_sequences(2, 16, c.vocab, 99);
    const auto before = logits_of([&](const std::string& n) { return test::checkpoint_weight(*m.ck, n); }, m, eval);
    const auto after = logits_of(plan_weights(plan, false), m, eval);
    // Only float32 rounding of the scaled weights separates the two.
    EXPECT_LT(relative_rms(after, before), 1e-5);
  }
}

TEST(AwqPass, QuantizedModelIsCloserToTheFloatModelThanRoundToNearest) {
  const Model m;
  const CalibrationSet calib({m.calib_file});
  const auto eval = random_sequences(3, 24, 512, 1234);  // held out: not the calibration tokens
  const auto truth = logits_of([&](const std::string& n) { return test::checkpoint_weight(*m.ck, n); }, m, eval);
  for (const char* type : {"Q4_0", "Q4_K", "int4_asym_g128", "Q3_K"}) {
    SCOPED_TRACE(type);
    // The embeddings and output head stay F32 in both: AWQ does not touch them, their error would only blur the
    // comparison of the linears.
    QuantizeOptions rtn;
    rtn.type = type;
    rtn.pure = true;
    rtn.tensor_types = {parse_tensor_type_override("token_embd|output=F32")};
    const Plan rtn_plan = make_plan(*m.ck, rtn);
    QuantizeOptions o = awq_options(type, true);
    o.pure = true;
    o.tensor_types = rtn.tensor_types;
    Plan plan = make_plan(*m.ck, o, nullptr, {}, &calib);
    apply_awq(plan, calib);
    const double e_rtn = relative_rms(logits_of(plan_weights(rtn_plan, true), m, eval), truth);
    const double e_awq = relative_rms(logits_of(plan_weights(plan, true), m, eval), truth);
    std::cout << type << ": logits rel RMS vs float, RTN " << e_rtn << ", AWQ " << e_awq << "\n";
    EXPECT_LT(e_awq, 0.9 * e_rtn);
  }
}

TEST(AwqPass, GroupedQueryAttentionLeavesValueToOutputAlone) {
  const Model m;  // demo: 4 heads, 2 KV heads
  const QuantizeOptions o = awq_options("Q4_0", true);
  const CalibrationSet calib({m.calib_file});
  Plan plan = make_plan(*m.ck, o, nullptr, {}, &calib);
  const AwqReport r = apply_awq(plan, calib);
  const AwqGroupReport* vo = group_of(r, "blk.0.attn_v.weight");
  ASSERT_NE(vo, nullptr);
  EXPECT_NE(vo->skipped.find("grouped-query"), std::string::npos) << vo->skipped;
  for (const auto& t : plan.tensors) {
    if (t.name == "blk.0.attn_output.weight") EXPECT_TRUE(!t.transform || t.transform->col_mul.empty());
    if (t.name == "blk.0.attn_v.weight") {
      ASSERT_TRUE(t.transform);
      EXPECT_FALSE(t.transform->col_mul.empty());  // scaled as part of q, k, v
      EXPECT_TRUE(t.transform->row_div.empty());
    }
  }
  Report whole;
  whole.awq = r;
  const auto j = to_json(whole)["awq"];
  EXPECT_EQ(j["groups"].size(), 8u);
  EXPECT_TRUE(j["groups"][1].contains("skipped"));
  EXPECT_TRUE(j["groups"][0].contains("alpha"));
}

TEST(AwqPass, ClippingSparesQueryAndKeyAndOnlyShrinks) {
  const Model m;
  const QuantizeOptions o = awq_options("Q4_0", true);
  const CalibrationSet calib({m.calib_file});
  Plan plan = make_plan(*m.ck, o, nullptr, {}, &calib);
  const AwqReport r = apply_awq(plan, calib);
  EXPECT_EQ(r.clips.size(), 2u * 5u);  // v, o, gate, up, down per layer
  for (const auto& c : r.clips) {
    EXPECT_EQ(c.tensor.find("attn_q"), std::string::npos);
    EXPECT_EQ(c.tensor.find("attn_k"), std::string::npos);
    EXPECT_GE(c.mean_shrink, 0.55 - 1e-6);  // 10 steps of 1/20: the least bound is 0.55 max|w|
    EXPECT_LE(c.mean_shrink, 1.0 + 1e-6);
  }
  for (const auto& t : plan.tensors) {
    const bool qk = t.name.find("attn_q") != std::string::npos || t.name.find("attn_k") != std::string::npos;
    if (qk) EXPECT_TRUE(t.transform->clip.empty()) << t.name;
    if (!t.transform || t.transform->clip.empty()) continue;
    EXPECT_EQ(t.transform->clip_group, 32u);
    // Clipped values never exceed their bound, and the bound is within [0.55, 1] of the group's scaled max.
    TensorPlan unclipped = t;
    auto x = std::make_shared<TensorTransform>(*t.transform);
    x->clip.clear();
    unclipped.transform = x;
    const std::vector<float> w = read_finite_tensor(unclipped), c = read_finite_tensor(t);
    const size_t groups = t.cols / 32;
    for (size_t k = 0; k < t.rows * groups; ++k) {
      float mx = 0, mc = 0;
      for (size_t i = 0; i < 32; ++i) {
        mx = std::max(mx, std::fabs(w[k * 32 + i]));
        mc = std::max(mc, std::fabs(c[k * 32 + i]));
      }
      ASSERT_LE(mc, t.transform->clip[k] * (1 + 1e-6f)) << t.name;
      ASSERT_GE(t.transform->clip[k], 0.55f * mx * (1 - 1e-5f)) << t.name;
      ASSERT_LE(t.transform->clip[k], mx * (1 + 1e-5f)) << t.name;
    }
  }
}

TEST(AwqPass, AwqPlusGptqMeasuresTheTrueOutputErrorThroughTheRescaledHessian) {
  const Model m;
  QuantizeOptions o = awq_options("Q4_0", false);
  o.method = Method::AwqGptq;
  const CalibrationSet calib({m.calib_file});
  Plan plan = make_plan(*m.ck, o, nullptr, {}, &calib);
  apply_awq(plan, calib);
  // X from the calibration file (original space); Q / s undoes the scaling: ||X (Q/s - W)^T||^2 / ||X W^T||^2.
  const SafetensorsFile f(m.calib_file);
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"}) {
    SCOPED_TRACE(name);
    const TensorPlan& t = *std::find_if(plan.tensors.begin(), plan.tensors.end(),
                                        [&](const TensorPlan& p) { return p.source_name() == name; });
    ASSERT_TRUE(t.gptq);
    ASSERT_FALSE(t.transform->col_mul.empty());
    const QuantizedTensor q = quantize_tensor(t, plan.config);
    ASSERT_TRUE(q.gptq);
    std::string module = std::string(name).substr(0, std::string(name).size() - 7);
    if (module.ends_with("q_proj")) module = module.substr(0, module.size() - 6) + "q_proj";
    const SafetensorsTensor* xt = f.find(module);
    ASSERT_NE(xt, nullptr);
    std::vector<float> xv(xt->numel());
    convert_to_f32(f.data(*xt).data(), xt->dtype, xv.data(), xv.size());
    const Eigen::MatrixXd X =
        Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(xv.data(), xt->shape[0], xt->shape[1]).cast<double>();
    const Eigen::MatrixXd W = test::checkpoint_weight(*m.ck, name);
    std::vector<float> deq(t.rows * t.cols);
    const size_t rb = t.format->row_bytes(t.cols);
    for (size_t r = 0; r < t.rows; ++r) t.format->dequantize_row(q.parts[0].data() + r * rb, deq.data() + r * t.cols, t.cols);
    Eigen::MatrixXd Q(t.rows, t.cols);
    for (size_t r = 0; r < t.rows; ++r)
      for (size_t c = 0; c < t.cols; ++c)
        Q(static_cast<Eigen::Index>(t.row_order.empty() ? r : t.row_order[r]), static_cast<Eigen::Index>(c)) =
            deq[r * t.cols + c] / t.transform->col_mul[c];
    const double truth = (X * (Q - W).transpose()).squaredNorm() / (X * W.transpose()).squaredNorm();
    EXPECT_NEAR(q.gptq->output_rel_error, truth, 1e-3 * truth);
  }
}

// awq+gptq from calibration text, block by block: once a block's q/k/v are in place the engine runs its scaled norms
// and linears, so gate/up read inputs already divided by AWQ's scales and their Hessian must not be scaled again.
// With the attention stored in F32 (exactly the float attention, up to rounding), block 0's gate/up see the same
// inputs block by block as with float inputs (where the scales are applied to the float model's Hessian): GPTQ must
// make the same tensors and measure the same output error in both.
TEST(AwqPass, AwqPlusGptqBlockByBlockUsesTheScaledInputsAsTheyAre) {
  test::TempDir dir;
  run_make_demo(dir / "demo", {});
  auto run = [&](bool float_inputs) {
    QuantizeJob job;
    job.inputs = {dir / "demo"};
    job.output = dir / (float_inputs ? "float.gguf" : "sequential.gguf");
    job.options.method = Method::AwqGptq;
    job.options.type = "Q4_0";
    job.options.tensor_types.push_back(parse_tensor_type_override("attn_(q|k|v|output)=F32"));
    job.options.threads = 2;
    job.calib = {dir / "demo" / "calib.txt"};
    job.sampling.samples = 8;
    job.sampling.seqlen = 64;
    job.calib_float_inputs = float_inputs;
    return run_quantize(job);
  };
  const Report seq = run(false), flt = run(true);
  ASSERT_TRUE(seq.awq && flt.awq);
  size_t checked = 0;
  for (const char* name : {"blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"}) {
    SCOPED_TRACE(name);
    auto find = [&](const Report& r) {
      const auto it = std::find_if(r.tensors.begin(), r.tensors.end(), [&](const TensorReport& t) { return t.name == name; });
      EXPECT_NE(it, r.tensors.end());
      return *it;
    };
    const TensorReport a = find(seq), b = find(flt);
    ASSERT_TRUE(a.gptq && b.gptq);
    ASSERT_EQ(a.method, "awq+gptq");  // really scaled
    // Rounding differences in the inputs flip a few of GPTQ's near-tie decisions (here within 3%); the scales
    // applied twice make it 45-55% lower.
    EXPECT_NEAR(a.gptq->output_rel_error, b.gptq->output_rel_error, 0.1 * b.gptq->output_rel_error);
    ++checked;
  }
  EXPECT_EQ(checked, 2u);
}

TEST(AwqPass, SameBytesForAnyThreadCount) {
  const Model m;
  const CalibrationSet calib({m.calib_file});
  std::vector<std::string> bytes;
  for (unsigned threads : {1u, 2u, 3u}) {
    QuantizeOptions o = awq_options("Q4_K_M", true);
    o.threads = threads;
    Plan plan = make_plan(*m.ck, o, nullptr, {}, &calib);
    apply_awq(plan, calib);
    const fs::path out = m.dir / ("t" + std::to_string(threads) + ".gguf");
    quantize_to_gguf(*m.ck, plan, out, true);
    std::ifstream in(out, std::ios::binary);
    bytes.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_EQ(bytes[0], bytes[1]);
  EXPECT_EQ(bytes[0], bytes[2]);
}

TEST(AwqPass, RefusesWhatItCannotUseByName) {
  const Model m;
  QuantizeOptions o = awq_options("Q4_0", true);
  // No calibration, no model config.
  EXPECT_THROW(make_plan(*m.ck, o), UsageError);
  const Checkpoint plain = Checkpoint::open_files({m.calib_file});
  const CalibrationSet calib({m.calib_file});
  EXPECT_THROW(make_plan(plain, o, nullptr, {}, &calib), UsageError);

  auto apply_with = [&](const std::vector<SafetensorsBlob>& blobs, bool allow_missing) {
    const fs::path p = m.dir / "bad.safetensors";
    write_safetensors(p, blobs);
    const CalibrationSet bad({p});
    QuantizeOptions opts = o;
    opts.allow_missing_calib = allow_missing;
    Plan plan = make_plan(*m.ck, opts, nullptr, {}, &bad);
    return std::make_pair(apply_awq(plan, bad), plan.calibration_missing);
  };
  auto expect_error = [&](const std::vector<SafetensorsBlob>& blobs, const std::string& needle) {
    try {
      apply_with(blobs, false);
      ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::vector<float> x(4 * 256, 0.5f);
  auto blob = [](const std::string& name, std::vector<float> v, std::vector<uint64_t> shape) {
    SafetensorsBlob b{name, DType::F32, std::move(shape), std::vector<uint8_t>(v.size() * 4)};
    std::memcpy(b.bytes.data(), v.data(), b.bytes.size());
    return b;
  };
  // Nothing for most layers: named, and --allow-missing-calib leaves them unscaled.
  const std::vector<SafetensorsBlob> partial = {blob("model.layers.0.self_attn.q_proj", x, {4, 256})};
  expect_error(partial, "model.layers.0.self_attn.o_proj");
  const auto [rep, missing] = apply_with(partial, true);
  EXPECT_TRUE(rep.groups[0].skipped.empty());
  EXPECT_NE(rep.groups[2].skipped.find("no calibration"), std::string::npos);
  EXPECT_FALSE(missing.empty());
  // Wrong width, NaN, a precomputed Hessian.
  expect_error({blob("model.layers.0.self_attn.q_proj", std::vector<float>(4 * 100, 1.0f), {4, 100})}, "width 100");
  std::vector<float> nan = x;
  nan[3 * 256 + 5] = std::nanf("");
  expect_error({blob("model.layers.0.self_attn.q_proj", nan, {4, 256})}, "token 3, column 5 is not finite");
  expect_error({blob("model.layers.0.self_attn.q_proj.hessian", std::vector<float>(256 * 256, 0.0f), {256, 256}),
                blob("model.layers.0.self_attn.q_proj.hessian_tokens", {4.0f}, {1})},
               "precomputed Hessian");
}

}  // namespace
}  // namespace qz
