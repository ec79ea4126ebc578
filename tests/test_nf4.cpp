// bitsandbytes' NF4/FP4: code tables against their construction, a hand-checked block, error bounds, double
// quantization, bits per weight, and the GGUF round trip.
#include "qz/formats/nf4.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "qz/core/error.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "test_util.hpp"

#include <fstream>
#include <nlohmann/json.hpp>

namespace qz {
namespace {

namespace fs = std::filesystem;

TEST(Nf4Codes, NormalFloatTableEqualsItsConstruction) {
  // create_normal_map(0.9677083): quantiles of N(0,1), float32, sorted, divided by the largest; bitsandbytes ships
  // the result as a literal table, which must come out bit for bit.
  const auto built = construct_nf4_code();
  const auto& published = nf4_code();
  for (size_t i = 0; i < 16; ++i) EXPECT_EQ(built[i], published[i]) << i;
  EXPECT_EQ(published[7], 0.0f);
  EXPECT_EQ(published[0], -1.0f);
  EXPECT_EQ(published[15], 1.0f);
  for (size_t i = 0; i + 1 < 16; ++i) EXPECT_LT(published[i], published[i + 1]);
  EXPECT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-14);
  EXPECT_NEAR(normal_quantile(0.5), 0.0, 1e-15);
  EXPECT_NEAR(normal_quantile(1e-10), -6.361340902404056, 1e-12);
}

// torch.linspace's float32 CPU kernel as bitsandbytes' tables call it, against values torch itself printed
// (torch.linspace(0.1, 1, 9).tolist(), torch 1.13.1 on an AVX-512 x86-64 machine, where the kernel runs its scalar
// loop with fused multiply-adds; plain float arithmetic gives 0.43749997 for the fourth value).
TEST(Nf4Codes, TorchLinspaceMatchesTorchsOwnValues) {
  const std::vector<float> torch9 = {0.100000001f, 0.212500006f, 0.324999988f, 0.4375f,      0.550000012f,
                                     0.662500024f, 0.774999976f, 0.887499988f, 1.0f};
  EXPECT_EQ(torch_linspace(0.1f, 1.0f, 9), torch9);
  const std::vector<float> torch5 = {0.100000001f, 0.324999988f, 0.550000012f, 0.774999976f, 1.0f};
  EXPECT_EQ(torch_linspace(0.1f, 1.0f, 5), torch5);
}

TEST(Nf4Codes, DynamicMapFollowsItsConstruction) {
  // create_dynamic_map(signed=True, 7, 8): for decade i = 0..6, the 2^i midpoints of linspace(0.1, 1, 2^i + 1)
  // times 10^(i-6), with both signs, then 0 and 1.
  const auto& m = dynamic_map();
  std::vector<double> expected = {0.0, 1.0};
  for (int i = 0; i < 7; ++i) {
    const int items = (1 << i) + 1;
    for (int j = 0; j + 1 < items; ++j) {
      const double a = 0.1 + 0.9 * j / (items - 1), b = 0.1 + 0.9 * (j + 1) / (items - 1);
      expected.push_back(std::pow(10.0, i - 6) * (a + b) / 2);
      expected.push_back(-std::pow(10.0, i - 6) * (a + b) / 2);
    }
  }
  std::sort(expected.begin(), expected.end());
  ASSERT_EQ(expected.size(), 256u);
  for (size_t i = 0; i < 256; ++i) {
    EXPECT_NEAR(m[i], expected[i], 4e-7 * std::fabs(expected[i]) + 1e-12) << i;
    if (i) EXPECT_LE(m[i - 1], m[i]);
  }
  EXPECT_EQ(m[255], 1.0f);
  EXPECT_EQ(fp4_code()[3], 1.0f);  // 12 / 12
  EXPECT_EQ(fp4_code()[1], 0.0625f / 12.0f);
}

TEST(Nf4, HandCheckedBlock) {
  // One block of 32: absmax 1. By the table: 1 -> 15; -1 -> 0; 0 -> 7; 0.5 lies below the midpoint 0.5017 of
  // 0.4407 (12) and 0.5626 (13) -> 12; -0.5 lies below the midpoint -0.4600 of -0.5251 (2) and -0.3949 (3) -> 2;
  // 0.3 lies above the midpoint 0.2920 of 0.2461 (10) and 0.3379 (11) -> 11; zeros -> 7.
  // Packed high nibble first: F0 7C 2B 77 ...
  std::vector<float> x(32, 0.0f);
  x[0] = 1.0f, x[1] = -1.0f, x[2] = 0.0f, x[3] = 0.5f, x[4] = -0.5f, x[5] = 0.3f;
  Nf4Options o;
  o.blocksize = 32;
  o.double_quant = false;
  const Nf4Tensor t = quantize_nf4(x.data(), x.size(), o);
  ASSERT_EQ(t.packed.size(), 16u);
  EXPECT_EQ(t.packed[0], 0xF0);
  EXPECT_EQ(t.packed[1], 0x7C);
  EXPECT_EQ(t.packed[2], 0x2B);
  for (size_t i = 3; i < 16; ++i) EXPECT_EQ(t.packed[i], 0x77) << i;
  EXPECT_EQ(t.absmax, std::vector<float>{1.0f});
  // A value exactly on a midpoint takes the lower code (torch.bucketize).
  std::vector<float> tie(32, 0.0f);
  tie[0] = 1.0f;
  tie[1] = (nf4_code()[12] + nf4_code()[13]) / 2.0f;
  EXPECT_EQ(quantize_nf4(tie.data(), 32, o).packed[0], 0xFC);
}

// Every value within half the gap to the neighbouring code (on the side it lies) times its block's absmax.
void check_bound(const std::vector<float>& x, const Nf4Options& o) {
  const Nf4Tensor t = quantize_nf4(x.data(), x.size(), o);
  std::vector<float> y(x.size());
  dequantize_nf4(t, o, y.data());
  const auto absmax = nf4_absmax(t, o);
  const auto& code = nf4_code();
  for (size_t i = 0; i < x.size(); ++i) {
    const float a = absmax[i / o.blocksize];
    const size_t q = i % 2 == 0 ? t.packed[i / 2] >> 4 : t.packed[i / 2] & 15;  // first value in the high nibble
    ASSERT_EQ(y[i], code[q] * a) << i;
    const double gap = std::max(q > 0 ? code[q] - code[q - 1] : 0.0f, q < 15 ? code[q + 1] - code[q] : 0.0f);
    double true_a = 0;  // the block's true absmax
    for (size_t j = i / o.blocksize * o.blocksize; j < std::min(x.size(), (i / o.blocksize + 1) * o.blocksize); ++j)
      true_a = std::max(true_a, static_cast<double>(std::fabs(x[j])));
    // With double quantization the stored absmax differs from the true one; the bound is in units of it.
    const double slack = std::fabs(true_a - a) * 1.0;
    ASSERT_LE(std::fabs(x[i] - y[i]), gap / 2 * a + slack + 1e-6 * a) << "element " << i;
  }
}

TEST(Nf4, ErrorBoundsWithBlocksAcrossRowsAndAPartialBlock) {
  std::vector<float> x = test::gaussian(64 * 256 * 2 + 100, 21, 0.02f);
  for (size_t i = 0; i < x.size(); i += 333) x[i] *= 10;
  Nf4Options plain;
  plain.double_quant = false;
  check_bound(x, plain);
  Nf4Options dq;
  check_bound(x, dq);
  Nf4Options big;
  big.blocksize = 4096;
  check_bound(x, big);
}

TEST(Nf4, DoubleQuantizedAbsmaxStaysOnItsGrid) {
  std::vector<float> x = test::gaussian(64 * 600, 22, 0.02f);
  Nf4Options plain, dq;
  plain.double_quant = false;
  const auto exact = quantize_nf4(x.data(), x.size(), plain).absmax;
  const Nf4Tensor t = quantize_nf4(x.data(), x.size(), dq);
  ASSERT_EQ(t.nested_absmax.size(), 3u);  // 600 blocks in groups of 256
  const auto restored = nf4_absmax(t, dq);
  const auto& map = dynamic_map();
  double mean = 0;
  for (float a : exact) mean += a;
  EXPECT_NEAR(t.nested_offset, mean / exact.size(), 1e-6);
  for (size_t b = 0; b < exact.size(); ++b) {
    const size_t q = t.qabsmax[b];
    const double gap = std::max(q > 0 ? map[q] - map[q - 1] : 0.0f, q < 255 ? map[q + 1] - map[q] : 0.0f);
    EXPECT_LE(std::fabs(restored[b] - exact[b]), gap / 2 * t.nested_absmax[b / 256] * (1 + 1e-5) + 1e-9) << b;
  }
}

TEST(Nf4, BitsPerWeight) {
  Nf4Options dq, plain;
  plain.double_quant = false;
  const size_t n = 64 * 256 * 4;
  EXPECT_DOUBLE_EQ(nf4_bits_per_weight(n, dq), 4.0 + 8.0 / 64 + 32.0 / (64 * 256));  // 4.127
  EXPECT_NEAR(nf4_bits_per_weight(n, dq), 4.127, 0.0005);
  EXPECT_DOUBLE_EQ(nf4_bits_per_weight(n, plain), 4.5);
  Nf4Options bad;
  bad.blocksize = 48;
  EXPECT_THROW(validate_nf4_options(bad), UsageError);
  Nf4Options parsed;
  ASSERT_TRUE(parse_nf4_name("fp4_b128_dq", &parsed));
  EXPECT_TRUE(parsed.fp4 && parsed.double_quant && parsed.blocksize == 128);
  EXPECT_FALSE(parse_nf4_name("nf4_b100", &parsed));
}

TEST(Nf4, GgufRoundTripThroughThePipeline) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  for (const std::string m : {"nf4", "fp4"}) {
    QuantizeOptions o;
    set_method(o, m);
    const Plan plan = make_plan(ck, o);
    const Nf4Options opts{64, true, m == "fp4"};
    const fs::path out = dir / (m + ".gguf");
    const Report r = quantize_to_gguf(ck, plan, out, false);
    EXPECT_EQ(r.output_bytes, fs::file_size(out));
    const GgufFile g(out);
    for (const auto& t : plan.tensors) {
      if (!t.format->whole_tensor()) continue;
      EXPECT_EQ(t.format->name(), opts.name());
      std::vector<float> w(t.rows * t.cols);
      convert_to_f32(t.source->bytes().data(), t.source->tensor->dtype, w.data(), w.size());
      if (!t.row_order.empty()) {  // q/k rows in llama.cpp's order
        std::vector<float> p(w.size());
        for (size_t r = 0; r < t.rows; ++r) std::copy_n(w.data() + t.row_order[r] * t.cols, t.cols, p.data() + r * t.cols);
        w = p;
      }
      const Nf4Tensor q = quantize_nf4(w.data(), w.size(), opts);
      std::vector<float> expected(w.size());
      dequantize_nf4(q, opts, expected.data());
      EXPECT_EQ(dequantize_tensor(g, *g.find_tensor(t.name)), expected) << t.name;
    }
    const auto j = to_json(r);
    // Every stored byte counts: 32768 code bytes, 1024 quantized absmax, 4 nested absmax and the offset (fp32).
    EXPECT_DOUBLE_EQ(j["tensors"][2]["bits_per_weight"].get<double>(), 8.0 * (32768 + 1024 + 4 * 4 + 4) / 65536);
    EXPECT_EQ(dequantize_gguf(out, dir / (m + ".safetensors"), DType::F32, false), 21u);
  }
}

}  // namespace
}  // namespace qz

#include "qz/pipeline/bnb_export.hpp"

namespace qz {
namespace {

TEST(BnbExport, WritesTheKeysBitsandbytesReads) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  QuantizeOptions o;
  set_method(o, "nf4");
  const QuantizeConfig cfg = resolve_options(o);
  export_bnb(ck, cfg, dir / "bnb", false);
  EXPECT_THROW(export_bnb(ck, cfg, dir / "bnb", false), UsageError);  // exists
  const SafetensorsFile f(dir / "bnb" / "model.safetensors");
  const std::string p = "model.layers.1.mlp.down_proj.weight";  // [256, 768]
  const SafetensorsTensor* w = f.find(p);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::U8);
  EXPECT_EQ(w->shape, (std::vector<uint64_t>{256 * 768 / 2, 1}));
  EXPECT_EQ(f.find(p + ".absmax")->dtype, DType::U8);
  EXPECT_EQ(f.find(p + ".absmax")->shape, (std::vector<uint64_t>{256 * 768 / 64}));
  EXPECT_EQ(f.find(p + ".nested_absmax")->shape, (std::vector<uint64_t>{12}));
  EXPECT_EQ(f.find(p + ".quant_map")->shape, (std::vector<uint64_t>{16}));
  EXPECT_EQ(f.find(p + ".nested_quant_map")->shape, (std::vector<uint64_t>{256}));
  const auto state_bytes = f.data(*f.find(p + ".quant_state.bitsandbytes__nf4"));
  const auto state = nlohmann::json::parse(std::string(state_bytes.begin(), state_bytes.end()));
  EXPECT_EQ(state["quant_type"], "nf4");
  EXPECT_EQ(state["blocksize"], 64);
  EXPECT_EQ(state["dtype"], "bfloat16");
  EXPECT_EQ(state["shape"], (std::vector<uint64_t>{256, 768}));
  EXPECT_EQ(state["nested_blocksize"], 256);
  EXPECT_EQ(state["nested_dtype"], "float32");

  // Decoding the exported tensors gives what quantizing the source gives (same bytes, HF row order kept).
  const auto* src = ck.find(p);
  std::vector<float> x(src->tensor->numel());
  convert_to_f32(src->bytes().data(), src->tensor->dtype, x.data(), x.size());
  Nf4Options opts;
  const Nf4Tensor q = quantize_nf4(x.data(), x.size(), opts);
  const auto packed = f.data(*w);
  EXPECT_TRUE(std::equal(packed.begin(), packed.end(), q.packed.begin()));
  const auto qa = f.data(*f.find(p + ".absmax"));
  EXPECT_TRUE(std::equal(qa.begin(), qa.end(), q.qabsmax.begin()));
  EXPECT_FLOAT_EQ(state["nested_offset"].get<float>(), q.nested_offset);
  std::vector<float> map(16);
  std::memcpy(map.data(), f.data(*f.find(p + ".quant_map")).data(), 64);
  EXPECT_TRUE(std::equal(map.begin(), map.end(), nf4_code().begin()));

  // Tensors bitsandbytes does not quantize are copied byte for byte.
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}) {
    const auto a = f.data(*f.find(name)), b = ck.find(name)->bytes();
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << name;
  }
  const auto config = nlohmann::json::parse(std::ifstream(dir / "bnb" / "config.json"));
  const auto& qc = config["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "bitsandbytes");
  EXPECT_EQ(qc["load_in_4bit"], true);
  EXPECT_EQ(qc["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(qc["bnb_4bit_use_double_quant"], true);
  EXPECT_EQ(qc["bnb_4bit_quant_storage"], "uint8");
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_TRUE(fs::exists(dir / "bnb" / "tokenizer.model"));
  EXPECT_THROW(export_bnb(ck, resolve_options(QuantizeOptions{}), dir / "x", false), UsageError);
}

}  // namespace
}  // namespace qz
