// End to end through the library: safetensors -> plan -> quantize -> GGUF -> dequantize.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
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
  return quantize_to_gguf(ck, plan, o, out, force);
}

QuantizeOptions method(MethodKind m, int bits, int group, unsigned threads = 2) {
  QuantizeOptions o;
  o.method = m;
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
      {method(MethodKind::Absmax, 8, 32), "Q8_0", amax / 127.0 * 0.51},
      {method(MethodKind::Absmax, 4, 32), "int4_sym_g32", amax / 7.0 * 0.51},
      {method(MethodKind::Zeropoint, 4, 32), "int4_asym_g32", (hi - lo) / 15.0 * 1.01},
      {method(MethodKind::Zeropoint, 3, -1), "int3_asym_row", (hi - lo) / 7.0 * 1.01},
      {method(MethodKind::Absmax, 5, 0), "int5_sym_tensor", amax / 15.0 * 0.51},
      {f16, "F16", amax * 0x1p-11},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.format);
    const fs::path out = dir / (c.format + ".gguf");
    run(dir / "m.safetensors", out, c.opts);
    const GgufFile g(out);
    const GgufTensorInfo* t = g.find_tensor("w");
    ASSERT_NE(t, nullptr);
    const StoredFormat sf = stored_format(g, *t);
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
  const Report r = run(dir / "m.safetensors", dir / "o.gguf", method(MethodKind::Zeropoint, 4, 64));
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
  const auto j = r.to_json();
  for (const char* k : {"name", "shape", "format", "bits_per_weight", "rmse", "max_abs_error", "sqnr_db", "seconds"})
    EXPECT_TRUE(j["tensors"][0].contains(k)) << k;
  for (const char* k : {"input_bytes", "output_bytes", "bits_per_weight", "wall_seconds", "peak_memory_bytes"})
    EXPECT_TRUE(j["totals"].contains(k)) << k;
}

std::string int_format_name_for_test(const QuantizeOptions& o) {
  return method_name(o.method) + std::to_string(o.bits) + "_" + std::to_string(o.group_size) + "_t";
}

TEST(Pipeline, OutputIsIdenticalForAnyThreadCount) {
  TempDir dir;
  write_demo_checkpoint(dir / "demo");
  for (const auto& base : {method(MethodKind::Zeropoint, 4, 128), method(MethodKind::Absmax, 8, 32)}) {
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
  const QuantizeOptions o = method(MethodKind::Absmax, 4, 64);
  const Plan plan = make_plan(ck, o);
  quantize_to_gguf(ck, plan, o, dir / "o.gguf", false);
  EXPECT_EQ(plan.file_bytes, fs::file_size(dir / "o.gguf"));
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
    test::expect_error<InputError>([&] { run(dir / "m.safetensors", dir / "o.gguf", method(MethodKind::Absmax, 4, 32)); },
                                   {"m.safetensors", "'layer.w'", "row 3, column 5", std::isnan(bad) ? "NaN" : "Inf"});
    EXPECT_FALSE(fs::exists(dir / "o.gguf"));
    EXPECT_EQ(dir.files().size(), 1u) << "a temporary file was left behind";
  }
}

TEST(Pipeline, RefusesToOverwriteWithoutForce) {
  TempDir dir;
  write_safetensors(dir / "m.safetensors", {blob("w", {4, 32}, test::gaussian(128, 1), DType::F32)});
  test::write_bytes(dir / "o.gguf", {1, 2, 3});
  EXPECT_THROW(run(dir / "m.safetensors", dir / "o.gguf", method(MethodKind::Absmax, 4, 32)), UsageError);
  EXPECT_EQ(fs::file_size(dir / "o.gguf"), 3u);
  run(dir / "m.safetensors", dir / "o.gguf", method(MethodKind::Absmax, 4, 32), true);
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
  QuantizeOptions o = method(MethodKind::Zeropoint, 4, 32);
  o.tensor_types.push_back(parse_tensor_type_override("^keep\\.=bf16"));
  const Plan p = make_plan(Checkpoint::open(dir / "m.safetensors"), o);
  auto find = [&](const std::string& n) {
    for (const auto& t : p.tensors)
      if (t.name == n) return &t;
    return static_cast<const TensorPlan*>(nullptr);
  };
  EXPECT_EQ(find("odd.weight")->format->name(), "int4_asym_row");  // 100 is not a multiple of 32
  EXPECT_TRUE(find("odd.weight")->fallback);
  EXPECT_EQ(find("lm_head.weight")->format->name(), "Q8_0");
  EXPECT_EQ(find("model.embed_tokens.weight")->format->name(), "int4_asym_g32");
  EXPECT_EQ(find("keep.weight")->format->name(), "BF16");
  EXPECT_EQ(find("conv")->format->name(), "F32");
  EXPECT_EQ(find("ids")->format->name(), "F32");
  EXPECT_EQ(p.fallbacks, 1u);

  QuantizeOptions q8;
  q8.type = "Q8_0";
  const Plan p2 = make_plan(Checkpoint::open(dir / "m.safetensors"), q8);
  EXPECT_EQ(p2.tensors[0].format->name(), "F16");  // Q8_0 needs rows of 32: llama-quantize's last resort is F16
}

TEST(Plan, RejectsBadOptions) {
  QuantizeOptions o;
  o.type = "q9_9";
  EXPECT_THROW(validate_options(o), UsageError);
  o = method(MethodKind::Absmax, 9, 32);
  EXPECT_THROW(validate_options(o), UsageError);
  o = method(MethodKind::Absmax, 4, -7);
  EXPECT_THROW(validate_options(o), UsageError);
  o = method(MethodKind::Zeropoint, 4, 32);
  o.type = "Q8_0";
  EXPECT_THROW(validate_options(o), UsageError);
  EXPECT_THROW(parse_tensor_type_override("noequals"), UsageError);
  EXPECT_THROW(parse_tensor_type_override("([=q8_0"), UsageError);
  EXPECT_THROW(parse_method("magic"), UsageError);
}

TEST(Pipeline, DequantizeWritesSafetensorsWithOriginalShapes) {
  TempDir dir;
  write_demo_checkpoint(dir / "demo");
  run(dir / "demo", dir / "o.gguf", method(MethodKind::Zeropoint, 4, 128));
  EXPECT_EQ(dequantize_gguf(dir / "o.gguf", dir / "back.safetensors", DType::F16, false), 21u);
  const Checkpoint orig = Checkpoint::open(dir / "demo");
  const SafetensorsFile back(dir / "back.safetensors");
  for (const auto& e : orig.tensors()) {
    const SafetensorsTensor* t = back.find(e.tensor->name);
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
