// End to end through the library: safetensors -> plan -> quantize -> GGUF -> dequantize.
#include <gtest/gtest.h>

#include <Eigen/Dense>

#include <cmath>
#include <limits>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/calibration/statistics.hpp"
#include "qz/pipeline/gguf_layout.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "qz/pipeline/report.hpp"
#include "qz/pipeline/tensor_source.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

SafetensorsBlob blob(const std::string& name, std::vector<uint64_t> shape, const std::vector<float>& v, DType t) {
  std::vector<uint8_t> bytes(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) std::memcpy(bytes.data() + 4 * i, &v[i], 4);
    else {
      const uint16_t h = t == DType::F16 ? fp32_to_fp16(v[i]) : fp32_to_bf16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return {name, t, std::move(shape), std::move(bytes)};
}

// The input values as the toolkit sees them (after the dtype's own rounding).
std::vector<float> as_read(const std::vector<float>& v, DType t) {
  std::vector<float> out(v);
  for (auto& x : out)
    if (t == DType::F16) x = fp16_to_fp32(fp32_to_fp16(x));
    else if (t == DType::BF16) x = bf16_to_fp32(fp32_to_bf16(x));
  return out;
}

Report run(const fs::path& in, const fs::path& out, const QuantizeOptions& o, bool force = false) {
  const Checkpoint ck = Checkpoint::open(in);
  const Plan plan = make_plan(ck, o);
  return quantize_to_gguf(ck, plan, out, force);
}

QuantizeOptions method(const std::string& m, int bits, int group, unsigned threads = 2) {
  QuantizeOptions o;
  set_method(o, m);
  o.bits = bits;
  o.group_size = group;
  o.threads = threads;
  return o;
}

class RoundTrip : public ::testing::TestWithParam<DType> {};

// Every input dtype: write safetensors, quantize, read the GGUF back, dequantize, compare with the input.
TEST_P(RoundTrip, EveryDtypeThroughEveryKindOfFormat) {
  const DType dt = GetParam();
  TempDir dir;
  const std::vector<float> w = test::gaussian(64 * 96, 1);
  const std::vector<float> norm = test::gaussian(96, 2, 1.0f);
  write_safetensors(dir / "m.safetensors", {blob("w", {64, 96}, w, dt), blob("norm", {96}, norm, dt)});
  const auto wr = as_read(w, dt);

  struct Case {
    QuantizeOptions opts;
    std::string format;
    double max_error;  // closed-form bound on |x - x^| for this input
  };
  float amax = 0, lo = 0, hi = 0;
  for (float x : wr) {
    amax = std::max(amax, std::fabs(x));
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  QuantizeOptions f16;
  f16.type = "f16";
  std::vector<Case> cases = {
      {method("absmax", 8, 32), "Q8_0", amax / 127.0 * 0.51},
      // Grids llama.cpp holds exactly are stored (and read back) as its types; the others in the own layout.
      {method("absmax", 4, 32), "Q4_0", amax / 7.0 * 0.51},
      {method("zeropoint", 4, 32), "Q4_1", (hi - lo) / 15.0 * 1.01},
      {method("zeropoint", 4, 48), "int4_asym_g48", (hi - lo) / 15.0 * 1.01},
      {method("zeropoint", 3, -1), "int3_asym_row", (hi - lo) / 7.0 * 1.01},
      {method("absmax", 5, 0), "Q5_0", amax / 15.0 * 0.51},  // per tensor, 96 columns: every block repeats d
      {method("absmax", 6, 0), "int6_sym_tensor", amax / 31.0 * 0.51},
      {f16, "F16", amax * 0x1p-11},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.format);
    const fs::path out = dir / (c.format + ".gguf");
    run(dir / "m.safetensors", out, c.opts);
    const GgufFile g(out);
    const GgufTensorInfo* t = g.find_tensor("w");
    ASSERT_NE(t, nullptr);
    const StoredTensor sf = read_stored_tensor(g, *t);
    EXPECT_EQ(sf.format->name(), c.format);
    EXPECT_EQ(sf.logical_ne, (std::vector<uint64_t>{96, 64}));
    const std::vector<float> y = dequantize_tensor(g, *t);
    ASSERT_EQ(y.size(), wr.size());
    double worst = 0;
    for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(y[i]) - wr[i]));
    EXPECT_LE(worst, c.max_error);
    if (c.format != "F16") EXPECT_GT(worst, 0.0);
    const GgufTensorInfo* n = g.find_tensor("norm");
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->type, GgmlType::F32);
    EXPECT_EQ(dequantize_tensor(g, *n), as_read(norm, dt));  // 1-D tensors are exact
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RoundTrip, ::testing::Values(DType::F32, DType::F16, DType::BF16));

TEST(Pipeline, ReportedErrorMatchesTheStoredValues) {
  TempDir dir;
  const std::vector<float> w = test::gaussian(32 * 128, 9);
  write_safetensors(dir / "m.safetensors", {blob("w", {32, 128}, w, DType::F32)});
  const Report r = run(dir / "m.safetensors", dir / "o.gguf", method("zeropoint", 4, 64));
  const GgufFile g(dir / "o.gguf");
  const auto y = dequantize_tensor(g, *g.find_tensor("w"));
  double se = 0, sx = 0, mx = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double e = static_cast<double>(w[i]) - y[i];
    se += e * e;
    sx += static_cast<double>(w[i]) * w[i];
    mx = std::max(mx, std::fabs(e));
  }
  ASSERT_EQ(r.tensors.size(), 1u);
  EXPECT_NEAR(r.tensors[0].error.rmse(), std::sqrt(se / static_cast<double>(w.size())), 1e-12);
  EXPECT_DOUBLE_EQ(r.tensors[0].error.max_abs_error, mx);
  EXPECT_NEAR(*r.tensors[0].error.sqnr_db(), 10 * std::log10(sx / se), 1e-9);
  EXPECT_EQ(r.output_bytes, fs::file_size(dir / "o.gguf"));
  const auto j = to_json(r);
  for (const char* k : {"name", "shape", "format", "bits_per_weight", "rmse", "max_abs_error", "sqnr_db", "seconds"})
    EXPECT_TRUE(j["tensors"][0].contains(k)) << k;
  for (const char* k : {"input_bytes", "output_bytes", "bits_per_weight", "wall_seconds", "peak_memory_bytes"})
    EXPECT_TRUE(j["totals"].contains(k)) << k;
}

std::string int_format_name_for_test(const QuantizeOptions& o) {
  return std::to_string(*o.bits) + "_" + std::to_string(*o.group_size) + "_t";
}

TEST(Report, ErrorStatsOverAnyLengthMatchTheDirectSums) {
  // The 8-lane sums (and the tail) against one plain loop in long double; the maximum is exact.
  for (size_t n : {0u, 1u, 5u, 8u, 13u, 1031u}) {
    const std::vector<float> x = test::gaussian(n, 3), y = test::gaussian(n, 4);
    ErrorStats s;
    s.add(x.data(), y.data(), n);
    long double sx = 0, se = 0;
    double mx = 0;
    for (size_t i = 0; i < n; ++i) {
      const long double e = static_cast<long double>(x[i]) - y[i];
      sx += static_cast<long double>(x[i]) * x[i];
      se += e * e;
      mx = std::max(mx, std::fabs(static_cast<double>(x[i]) - static_cast<double>(y[i])));
    }
    EXPECT_EQ(s.count, n);
    EXPECT_NEAR(s.sum_sq_input, static_cast<double>(sx), 1e-12 * static_cast<double>(sx) + 1e-300) << n;
    EXPECT_NEAR(s.sum_sq_error, static_cast<double>(se), 1e-12 * static_cast<double>(se) + 1e-300) << n;
    EXPECT_EQ(s.max_abs_error, mx) << n;
  }
}

TEST(Pipeline, OutputIsIdenticalForAnyThreadCount) {
  TempDir dir;
  write_demo_checkpoint(dir / "demo");
  for (const auto& base : {method("zeropoint", 4, 128), method("absmax", 8, 32)}) {
    std::vector<std::vector<uint8_t>> files;
    for (unsigned threads : {1u, 2u, 3u, 8u}) {
      QuantizeOptions o = base;
      o.threads = threads;
      const fs::path out = dir / (int_format_name_for_test(o) + std::to_string(threads) + ".gguf");
      run(dir / "demo", out, o);
      files.push_back(test::read_bytes(out));
    }
    for (size_t i = 1; i < files.size(); ++i) EXPECT_EQ(files[i], files[0]) << "thread setting " << i;
  }
}

TEST(Pipeline, PlanPredictsTheFileSize) {
  TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const QuantizeOptions o = method("absmax", 4, 64);
  const Plan plan = make_plan(ck, o);
  quantize_to_gguf(ck, plan, dir / "o.gguf", false);
  EXPECT_EQ(report_from_plan(plan).output_bytes, fs::file_size(dir / "o.gguf"));
  uint64_t bytes = 0;
  const GgufFile written(dir / "o.gguf");
  for (const auto& t : written.tensors()) bytes += t.nbytes;
  EXPECT_EQ(plan.tensor_bytes, bytes);
}

TEST(Pipeline, NonFiniteWeightIsAnErrorAndNothingIsWritten) {
  TempDir dir;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> w = test::gaussian(8 * 64, 4);
    w[3 * 64 + 5] = bad;
    write_safetensors(dir / "m.safetensors", {blob("layer.w", {8, 64}, w, DType::F32)});
    test::expect_error<InputError>([&] { run(dir / "m.safetensors", dir / "o.gguf", method("absmax", 4, 32)); },
                                   {"m.safetensors", "'layer.w'", "row 3, column 5", std::isnan(bad) ? "NaN" : "Inf"});
    EXPECT_FALSE(fs::exists(dir / "o.gguf"));
    EXPECT_EQ(dir.files().size(), 1u) << "a temporary file was left behind";
  }
}

TEST(Pipeline, RefusesToOverwriteWithoutForce) {
  TempDir dir;
  write_safetensors(dir / "m.safetensors", {blob("w", {4, 32}, test::gaussian(128, 1), DType::F32)});
  test::write_bytes(dir / "o.gguf", {1, 2, 3});
  EXPECT_THROW(run(dir / "m.safetensors", dir / "o.gguf", method("absmax", 4, 32)), UsageError);
  EXPECT_EQ(fs::file_size(dir / "o.gguf"), 3u);
  run(dir / "m.safetensors", dir / "o.gguf", method("absmax", 4, 32), true);
  EXPECT_GT(fs::file_size(dir / "o.gguf"), 3u);
}

TEST(Plan, FallbacksOutputHeadAndOverrides) {
  TempDir dir;
  write_safetensors(dir / "m.safetensors",
                    {blob("odd.weight", {4, 100}, test::gaussian(400, 1), DType::F32),
                     blob("lm_head.weight", {8, 64}, test::gaussian(512, 2), DType::F32),
                     blob("model.embed_tokens.weight", {8, 64}, test::gaussian(512, 3), DType::F32),
                     blob("keep.weight", {2, 64}, test::gaussian(128, 4), DType::F32),
                     blob("conv", {2, 2, 32}, test::gaussian(128, 5), DType::F32),
                     blob("ids", {4}, {0, 1, 2, 3}, DType::F32)});
  QuantizeOptions o = method("zeropoint", 4, 32);
  o.tensor_types.push_back(parse_tensor_type_override("^keep\\.=bf16"));
  const Plan p = make_plan(Checkpoint::open(dir / "m.safetensors"), o);
  auto find = [&](const std::string& n) {
    for (const auto& t : p.tensors)
      if (t.name == n) return &t;
    return static_cast<const TensorPlan*>(nullptr);
  };
  // Rows of 100 hold no block of 32: the grid stored as Q4_1 falls back to F16 (as llama-quantize does), keeping the
  // file loadable; a grid llama.cpp cannot hold anyway falls back to the own layout's per-row grid.
  EXPECT_EQ(find("odd.weight")->format->name(), "F16");
  EXPECT_TRUE(find("odd.weight")->fallback);
  const Plan p3 = make_plan(Checkpoint::open(dir / "m.safetensors"), method("zeropoint", 3, 32));
  EXPECT_EQ(p3.tensors[0].format->name(), "int3_asym_row");
  // The head gets Q6_K, whose 256-blocks its rows of 64 cannot hold: Q8_0, a fallback as llama-quantize counts it.
  EXPECT_EQ(find("lm_head.weight")->format->name(), "Q8_0");
  EXPECT_TRUE(find("lm_head.weight")->fallback);
  EXPECT_EQ(find("model.embed_tokens.weight")->format->name(), "int4_asym_g32");
  EXPECT_EQ(find("keep.weight")->format->name(), "BF16");
  EXPECT_EQ(find("conv")->format->name(), "F32");
  EXPECT_EQ(find("ids")->format->name(), "F32");
  EXPECT_EQ(p.fallbacks, 2u);

  QuantizeOptions q8;
  q8.type = "Q8_0";
  const Plan p2 = make_plan(Checkpoint::open(dir / "m.safetensors"), q8);
  EXPECT_EQ(p2.tensors[0].format->name(), "F16");  // Q8_0 needs rows of 32: llama-quantize's last resort is F16
}

TEST(Plan, RejectsBadOptions) {
  QuantizeOptions o;
  o.type = "q9_9";
  EXPECT_THROW(resolve_options(o), UsageError);
  o = method("absmax", 9, 32);
  EXPECT_THROW(resolve_options(o), UsageError);
  o = method("absmax", 4, -7);
  EXPECT_THROW(resolve_options(o), UsageError);
  o = method("zeropoint", 4, 32);
  o.type = "Q8_0";
  EXPECT_THROW(resolve_options(o), UsageError);
  EXPECT_THROW(parse_tensor_type_override("noequals"), UsageError);
  EXPECT_THROW(parse_tensor_type_override("([=q8_0"), UsageError);
  EXPECT_THROW(set_method(o, "magic"), UsageError);
}

TEST(Pipeline, DequantizeWritesSafetensorsWithOriginalShapes) {
  TempDir dir;
  write_demo_checkpoint(dir / "demo");
  run(dir / "demo", dir / "o.gguf", method("zeropoint", 4, 128));
  EXPECT_EQ(dequantize_gguf(dir / "o.gguf", dir / "back.safetensors", DType::F16, false), 21u);
  const Checkpoint orig = Checkpoint::open(dir / "demo");
  const ModelConfig model = parse_model_config(*orig.config(), "config.json", "demo");
  const SafetensorsFile back(dir / "back.safetensors");
  for (const auto& e : orig.tensors()) {
    const SafetensorsTensor* t = back.find(*gguf_tensor_name(model, e.tensor->name));
    ASSERT_NE(t, nullptr) << e.tensor->name;
    EXPECT_EQ(t->shape, e.tensor->shape);
    EXPECT_EQ(t->dtype, DType::F16);
  }
}

TEST(Pipeline, DemoCheckpointIsShardedLlamaShaped) {
  TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  EXPECT_EQ(ck.file_count(), 2u);
  EXPECT_EQ(ck.tensors().size(), 21u);
  ASSERT_TRUE(ck.config());
  EXPECT_EQ((*ck.config())["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(ck.find("model.layers.1.mlp.down_proj.weight")->tensor->shape, (std::vector<uint64_t>{256, 768}));
}

}  // namespace
}  // namespace qz

namespace qz {
namespace {

class GptqPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    write_demo_checkpoint(dir_ / "demo");
    write_demo_calibration(dir_ / "calib.safetensors");
  }
  QuantizeOptions gptq_options(const std::string& type = {}) const {
    QuantizeOptions o;
    o.method = Method::Gptq;
    o.type = type;
    if (type.empty()) {  // the integer grid of --bits / --group-size (a --type fixes its own)
      o.bits = 4;
      o.group_size = 64;
    }
    o.compare_rtn = true;
    o.threads = 2;
    return o;
  }
  test::TempDir dir_;
};

TEST_F(GptqPipeline, OutputErrorOfATallWeightIsMeasuredOnEvenlySpacedRows) {
  // A 1100 x 64 weight: the output error is measured on rows k * 1100 / 512 (k < 512); checked against
  // ||X (W - Q)^T||^2 / ||X W^T||^2 on those rows, in double, from the calibration activations themselves.
  const size_t rows = 1100, cols = 64, tokens = 300;
  const std::vector<float> w = test::gaussian(rows * cols, 21), x = test::gaussian(tokens * cols, 22, 1.0f);
  write_safetensors(dir_ / "tall.safetensors", {blob("model.layers.0.mlp.up_proj.weight", {rows, cols}, w, DType::F32)});
  write_safetensors(dir_ / "tall_calib.safetensors", {blob("model.layers.0.mlp.up_proj", {tokens, cols}, x, DType::F32)});
  const Checkpoint ck = Checkpoint::open(dir_ / "tall.safetensors");
  const CalibrationSet calib({dir_ / "tall_calib.safetensors"});
  const Plan plan = make_plan(ck, gptq_options(), nullptr, {}, &calib);
  const Report r = quantize_to_gguf(ck, plan, dir_ / "tall.gguf", true);
  ASSERT_EQ(r.tensors.size(), 1u);
  ASSERT_TRUE(r.tensors[0].gptq);
  EXPECT_EQ(r.tensors[0].gptq->output_error_rows, 512u);
  const GgufFile g(dir_ / "tall.gguf");
  const auto q = dequantize_tensor(g, g.tensors().front());
  const Eigen::MatrixXd X = Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(x.data(), tokens, cols).cast<double>();
  Eigen::MatrixXd Ws(512, cols), Es(512, cols);
  for (size_t k = 0; k < 512; ++k)
    for (size_t c = 0; c < cols; ++c) {
      const size_t i = (k * rows / 512) * cols + c;
      Ws(static_cast<Eigen::Index>(k), static_cast<Eigen::Index>(c)) = w[i];
      Es(static_cast<Eigen::Index>(k), static_cast<Eigen::Index>(c)) = static_cast<double>(w[i]) - q[i];
    }
  const double truth = (X * Es.transpose()).squaredNorm() / (X * Ws.transpose()).squaredNorm();
  EXPECT_NEAR(r.tensors[0].gptq->output_rel_error, truth, 1e-4 * truth);
  ASSERT_TRUE(r.tensors[0].gptq->rtn_output_rel_error);
  EXPECT_LT(r.tensors[0].gptq->output_rel_error, *r.tensors[0].gptq->rtn_output_rel_error);
}

TEST_F(GptqPipeline, LowersOutputErrorBelowRoundToNearestForEveryLayer) {
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  const CalibrationSet calib({dir_ / "calib.safetensors"});
  for (const std::string type : {"", "Q4_K_M", "Q4_0"}) {
    SCOPED_TRACE(type.empty() ? "int4_asym_g64" : type);
    const QuantizeOptions o = gptq_options(type);
    const Plan plan = make_plan(ck, o, nullptr, {}, &calib);
    const Report r = quantize_to_gguf(ck, plan, dir_ / ("g" + type + ".gguf"), true);
    size_t gptq_layers = 0;
    for (const auto& t : r.tensors) {
      if (!t.gptq) continue;
      ++gptq_layers;
      ASSERT_TRUE(t.gptq->rtn_output_rel_error);
      EXPECT_LT(t.gptq->output_rel_error, *t.gptq->rtn_output_rel_error) << t.name;
      EXPECT_EQ(t.gptq->tokens, 256u);
    }
    EXPECT_EQ(gptq_layers, 14u);  // 7 projections x 2 layers; embeddings and the output head round to nearest
    const auto j = to_json(r);
    EXPECT_EQ(j["tensors"][2]["method"], "gptq");
    EXPECT_TRUE(j["tensors"][2]["gptq"].contains("damp"));
    for (const char* k : {"hessian", "factor", "update", "output_error"})
      EXPECT_TRUE(j["tensors"][2]["gptq"]["seconds"].contains(k)) << k;
  }
}

// The refinement (methods/gptq_refine.hpp) is on by default and reported; --gptq-refine 0 turns it off. Activation
// files calibrate every layer on the same inputs either way, so each layer's output error can only drop with it.
TEST_F(GptqPipeline, TheRefinementIsOnByDefaultReportedAndLowersEveryLayersError) {
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  const CalibrationSet calib({dir_ / "calib.safetensors"});
  QuantizeOptions off = gptq_options("Q4_0");
  off.gptq_refine = 0;
  const Report with = quantize_to_gguf(ck, make_plan(ck, gptq_options("Q4_0"), nullptr, {}, &calib), dir_ / "on.gguf", true);
  const Report without = quantize_to_gguf(ck, make_plan(ck, off, nullptr, {}, &calib), dir_ / "off.gguf", true);
  ASSERT_EQ(with.tensors.size(), without.tensors.size());
  size_t refined = 0;
  for (size_t i = 0; i < with.tensors.size(); ++i) {
    if (!with.tensors[i].gptq) continue;
    SCOPED_TRACE(with.tensors[i].name);
    ASSERT_TRUE(without.tensors[i].gptq);
    EXPECT_EQ(without.tensors[i].gptq->refine_gain, 0.0);
    EXPECT_GE(with.tensors[i].gptq->refine_gain, 0.0);
    if (with.tensors[i].gptq->refine_gain > 0) ++refined;
    EXPECT_LE(with.tensors[i].gptq->output_rel_error, without.tensors[i].gptq->output_rel_error * (1 + 1e-6));
  }
  EXPECT_EQ(refined, 14u);
  const auto j = to_json(with);
  EXPECT_GT(j["tensors"][2]["gptq"]["refine_gain"].get<double>(), 0.0);
  EXPECT_TRUE(j["tensors"][2]["gptq"]["seconds"].contains("refine"));
}

TEST_F(GptqPipeline, SameFileForAnyThreadCount) {
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  const CalibrationSet calib({dir_ / "calib.safetensors"});
  QuantizeOptions o = gptq_options("Q4_K_S");
  o.compare_rtn = false;
  std::vector<std::vector<uint8_t>> files;
  for (unsigned threads : {1u, 3u}) {
    o.threads = threads;
    const fs::path out = dir_ / ("t" + std::to_string(threads) + ".gguf");
    quantize_to_gguf(ck, make_plan(ck, o, nullptr, {}, &calib), out, false);
    files.push_back(test::read_bytes(out));
  }
  EXPECT_EQ(files[0], files[1]);
}

TEST_F(GptqPipeline, MissingCalibrationIsAnErrorUnlessAllowed) {
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  // Only layer 0's attention inputs.
  const SafetensorsFile full(dir_ / "calib.safetensors");
  const auto* q = full.find("model.layers.0.self_attn.q_proj");
  std::vector<uint8_t> bytes(full.data(*q).begin(), full.data(*q).end());
  write_safetensors(dir_ / "part.safetensors", {{q->name, q->dtype, q->shape, bytes}});
  const CalibrationSet calib({dir_ / "part.safetensors"});
  QuantizeOptions o = gptq_options();
  test::expect_error<InputError>([&] { make_plan(ck, o, nullptr, {}, &calib); },
                                 {"model.layers.0.self_attn.o_proj.weight", "no calibration activations",
                                  "--allow-missing-calib"});
  o.allow_missing_calib = true;
  const Plan plan = make_plan(ck, o, nullptr, {}, &calib);
  EXPECT_EQ(plan.calibration_missing.size(), 11u);  // 14 projections, 3 of them fed by layer 0's q_proj entry
  EXPECT_THROW(make_plan(ck, o), UsageError);       // GPTQ without any calibration set
}

TEST_F(GptqPipeline, NonFiniteActivationsAreAnError) {
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  std::vector<float> x(8 * 256, 0.5f);
  x[3 * 256 + 17] = std::numeric_limits<float>::infinity();
  write_safetensors(dir_ / "bad.safetensors", {blob("model.layers.0.self_attn.q_proj", {8, 256}, x, DType::F32)});
  const CalibrationSet calib({dir_ / "bad.safetensors"});
  QuantizeOptions o = gptq_options();
  o.allow_missing_calib = true;
  const Plan plan = make_plan(ck, o, nullptr, {}, &calib);
  test::expect_error<InputError>([&] { quantize_to_gguf(ck, plan, dir_ / "x.gguf", false); },
                                 {"bad.safetensors", "q_proj", "token 3, column 17"});
  EXPECT_FALSE(fs::exists(dir_ / "x.gguf"));
}

TEST_F(GptqPipeline, PrecomputedHessianEqualsActivations) {
  const SafetensorsFile acts(dir_ / "calib.safetensors");
  const auto* t = acts.find("model.layers.0.mlp.down_proj");
  const CalibrationSet from_acts({dir_ / "calib.safetensors"});
  uint64_t tokens = 0;
  const Eigen::MatrixXd h = hessian_of(from_acts.inputs_of("model.layers.0.mlp.down_proj.weight"), t->shape[1], 2, &tokens);
  std::vector<float> hf(static_cast<size_t>(h.size()));
  for (Eigen::Index i = 0; i < h.rows(); ++i)
    for (Eigen::Index j = 0; j < h.cols(); ++j) hf[static_cast<size_t>(i * h.cols() + j)] = static_cast<float>(h(i, j));
  write_safetensors(dir_ / "h.safetensors",
                    {blob("model.layers.0.mlp.down_proj.hessian", {t->shape[1], t->shape[1]}, hf, DType::F32),
                     blob("model.layers.0.mlp.down_proj.hessian_tokens", {1}, {static_cast<float>(tokens)}, DType::F32)});
  // Half the tokens as activations and the Hessian of all of them: the merge weighs by token counts.
  const CalibrationSet both({dir_ / "h.safetensors", dir_ / "calib.safetensors"});
  uint64_t merged_tokens = 0;
  const Eigen::MatrixXd merged =
      hessian_of(both.inputs_of("model.layers.0.mlp.down_proj.weight"), t->shape[1], 2, &merged_tokens);
  EXPECT_EQ(merged_tokens, 2 * tokens);
  EXPECT_LT((merged - h).cwiseAbs().maxCoeff(), 1e-5 * h.cwiseAbs().maxCoeff());
}

}  // namespace
}  // namespace qz
