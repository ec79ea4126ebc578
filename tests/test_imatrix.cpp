// Importance matrices: llama.cpp's file forms, computing one from calibration activations, and using it.
#include "qz/io/imatrix.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include <cmath>

#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/io/gguf.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/calibration/statistics.hpp"
#include "qz/pipeline/quantize.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

SafetensorsBlob f32(const std::string& name, std::vector<uint64_t> shape, const std::vector<float>& v) {
  return {name, DType::F32, std::move(shape), test::to_bytes(v)};
}

TEST(Imatrix, GgufFormRoundTripsAndFollowsLlamaCppLayout) {
  TempDir dir;
  Imatrix m;
  m.datasets = {"wiki.txt"};
  m.chunk_count = 7;
  m.chunk_size = 512;
  m.tensors["blk.0.attn_q.weight"] = {{2.0f, 4.0f, 6.0f}, {2.0f}};
  m.tensors["blk.0.ffn_down.weight"] = {{1.0f, 1.0f, 3.0f, 3.0f}, {0.0f, 3.0f}};  // two matrices, one unseen
  write_imatrix_gguf(dir / "i.gguf", m, false);

  const GgufFile g(dir / "i.gguf");  // the layout llama.cpp reads
  EXPECT_EQ(*g.find("general.type")->get_if<std::string>(), "imatrix");
  EXPECT_EQ(*g.find("imatrix.chunk_count")->get_if<uint32_t>(), 7u);
  EXPECT_EQ(*g.find("imatrix.chunk_size")->get_if<uint32_t>(), 512u);
  const GgufTensorInfo* s = g.find_tensor("blk.0.ffn_down.weight.in_sum2");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->ne, (std::vector<uint64_t>{2, 2}));
  EXPECT_EQ(g.find_tensor("blk.0.ffn_down.weight.counts")->ne, (std::vector<uint64_t>{1, 2}));

  const Imatrix back = read_imatrix(dir / "i.gguf");
  EXPECT_EQ(back.datasets, m.datasets);
  EXPECT_EQ(back.tensors.at("blk.0.attn_q.weight").importance(), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  // A matrix that saw no tokens gets uniform importance, as llama.cpp does.
  EXPECT_EQ(back.tensors.at("blk.0.ffn_down.weight").importance(), (std::vector<float>{1.0f, 1.0f, 1.0f, 1.0f}));
}

// Legacy .dat bytes written by hand: n_entries, then name, ncall, nval, values (mean x^2 * ncall), then trailer.
std::vector<uint8_t> legacy_dat() {
  std::vector<uint8_t> b;
  auto put = [&](const void* p, size_t n) { b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); };
  auto i32 = [&](int32_t v) { put(&v, 4); };
  i32(1);
  const std::string name = "blk.0.attn_v.weight";
  i32(static_cast<int32_t>(name.size()));
  put(name.data(), name.size());
  i32(4);  // ncall
  i32(2);  // nval
  const float vals[2] = {8.0f, 2.0f};
  put(vals, 8);
  i32(10);  // last chunk
  const std::string ds = "data.txt";
  i32(static_cast<int32_t>(ds.size()));
  put(ds.data(), ds.size());
  return b;
}

TEST(Imatrix, ReadsLegacyDat) {
  TempDir dir;
  test::write_bytes(dir / "i.dat", legacy_dat());
  const Imatrix m = read_imatrix(dir / "i.dat");
  ASSERT_EQ(m.tensors.size(), 1u);
  EXPECT_EQ(m.tensors.at("blk.0.attn_v.weight").importance(), (std::vector<float>{2.0f, 0.5f}));
  EXPECT_EQ(m.datasets, std::vector<std::string>{"data.txt"});
  EXPECT_EQ(m.chunk_count, 10u);
}

TEST(Imatrix, MalformedFilesAreClearErrors) {
  TempDir dir;
  auto bytes = legacy_dat();
  bytes.resize(30);
  test::write_bytes(dir / "cut.dat", bytes);
  test::expect_error<InputError>([&] { read_imatrix(dir / "cut.dat"); }, {"cut.dat", "truncated"});
  test::write_bytes(dir / "zero.dat", {0, 0, 0, 0});
  test::expect_error<InputError>([&] { read_imatrix(dir / "zero.dat"); }, {"zero.dat", "entry count 0"});
  // A GGUF file that is not an imatrix.
  GgufWriter w;
  w.add_tensor("x", {1}, GgmlType::F32);
  {
    OutputFile out(dir / "not.gguf", false);
    w.write_header(out);
    w.write_tensor_data(out, test::to_bytes(std::vector<float>{1}));
    out.commit();
  }
  test::expect_error<InputError>([&] { read_imatrix(dir / "not.gguf"); }, {"not.gguf", "not an imatrix"});
  // An entry without elements (found by fuzz_imatrix: a memcpy from null before).
  GgufWriter e;
  e.add_tensor("blk.0.attn_q.weight.in_sum2", {0}, GgmlType::F32);
  e.add_tensor("blk.0.attn_q.weight.counts", {1}, GgmlType::F32);
  {
    OutputFile out(dir / "empty.gguf", false);
    e.write_header(out);
    e.write_tensor_data(out, {});
    e.write_tensor_data(out, test::to_bytes(std::vector<float>{1}));
    out.commit();
  }
  test::expect_error<InputError>([&] { read_imatrix(dir / "empty.gguf"); },
                                 {"empty.gguf", "blk.0.attn_q.weight.in_sum2", "holds no values"});
  // A NaN value and a call count of 0 in a legacy file (issue 16, defect 8).
  auto nan = legacy_dat();
  const float bad = std::nanf("");
  std::memcpy(nan.data() + nan.size() - 4 - 4 - 8 - 8 + 4, &bad, 4);  // the second value
  test::write_bytes(dir / "nan.dat", nan);
  test::expect_error<InputError>([&] { read_imatrix(dir / "nan.dat"); }, {"nan.dat", "blk.0.attn_v.weight", "value 1"});
}

TEST(ImatrixCompute, SumsOfSquaresPerColumnWithSharedInputsAndSeveralFiles) {
  TempDir dir;
  // A 2-layer slice: q/k/v share the q_proj entry, gate/up share gate_proj, down has its own.
  write_safetensors(dir / "m.safetensors",
                    {f32("model.layers.0.self_attn.q_proj.weight", {2, 3}, std::vector<float>(6, 0.1f)),
                     f32("model.layers.0.self_attn.k_proj.weight", {2, 3}, std::vector<float>(6, 0.1f)),
                     f32("model.layers.0.mlp.up_proj.weight", {4, 3}, std::vector<float>(12, 0.1f)),
                     f32("model.layers.0.mlp.down_proj.weight", {3, 4}, std::vector<float>(12, 0.1f)),
                     f32("model.layers.0.input_layernorm.weight", {3}, {1, 1, 1})});
  // Activations [tokens, width]; expected sums written out by hand.
  write_safetensors(dir / "c1.safetensors",
                    {f32("model.layers.0.self_attn.q_proj", {2, 3}, {1, 2, 3, -1, 0, 2}),    // 2, 4, 13
                     f32("model.layers.0.mlp.gate_proj", {1, 3}, {0.5f, 1, -2})});          // .25, 1, 4
  write_safetensors(dir / "c2.safetensors", {f32("model.layers.0.self_attn.q_proj", {1, 3}, {3, 0, 1})});  // 9, 0, 1
  const Checkpoint model = Checkpoint::open(dir / "m.safetensors");
  const CalibrationSet calib({dir / "c1.safetensors", dir / "c2.safetensors"});
  std::vector<std::string> missing;
  const Imatrix m = compute_imatrix(model, calib, &missing);
  ASSERT_EQ(m.tensors.count("blk.0.attn_q.weight"), 1u);
  EXPECT_EQ(m.tensors.at("blk.0.attn_q.weight").sum2, (std::vector<float>{11, 4, 14}));
  EXPECT_EQ(m.tensors.at("blk.0.attn_q.weight").counts, std::vector<float>{3});
  EXPECT_EQ(m.tensors.at("blk.0.attn_k.weight").sum2, (std::vector<float>{11, 4, 14}));
  EXPECT_EQ(m.tensors.at("blk.0.ffn_up.weight").sum2, (std::vector<float>{0.25f, 1, 4}));
  EXPECT_EQ(missing, std::vector<std::string>{"model.layers.0.mlp.down_proj.weight"});
}

TEST(ImatrixCompute, BadActivationsAreErrors) {
  TempDir dir;
  write_safetensors(dir / "m.safetensors", {f32("model.layers.0.self_attn.q_proj.weight", {2, 3}, std::vector<float>(6))});
  write_safetensors(dir / "nan.safetensors",
                    {f32("model.layers.0.self_attn.q_proj", {2, 3}, {1, 2, 3, 4, std::nanf(""), 6})});
  write_safetensors(dir / "wide.safetensors", {f32("model.layers.0.self_attn.q_proj", {1, 4}, {1, 2, 3, 4})});
  const Checkpoint model = Checkpoint::open(dir / "m.safetensors");
  test::expect_error<InputError>([&] { compute_imatrix(model, CalibrationSet({dir / "nan.safetensors"})); },
                                 {"nan.safetensors", "q_proj", "token 1, column 1"});
  test::expect_error<InputError>([&] { compute_imatrix(model, CalibrationSet({dir / "wide.safetensors"})); },
                                 {"wide.safetensors", "width 4", "3 input columns"});
  // No token, a Hessian of the wrong shape, and a token count a float-to-integer cast cannot take (issue 16, 8 and 9).
  write_safetensors(dir / "empty.safetensors", {f32("model.layers.0.self_attn.q_proj", {0, 3}, {})});
  test::expect_error<InputError>([&] { compute_imatrix(model, CalibrationSet({dir / "empty.safetensors"})); },
                                 {"empty.safetensors", "holds no token"});
  write_safetensors(dir / "h.safetensors", {f32("model.layers.0.self_attn.q_proj.hessian", {1, 3}, {1, 2, 3}),
                                            f32("model.layers.0.self_attn.q_proj.hessian_tokens", {1}, {10})});
  test::expect_error<InputError>([&] { compute_imatrix(model, CalibrationSet({dir / "h.safetensors"})); },
                                 {"h.safetensors", "is [1, 3]", "must be [3, 3]"});
  write_safetensors(dir / "n.safetensors", {f32("model.layers.0.self_attn.q_proj.hessian", {3, 3}, std::vector<float>(9, 1.0f)),
                                            f32("model.layers.0.self_attn.q_proj.hessian_tokens", {1}, {1e30f})});
  test::expect_error<InputError>([&] { hessian_of(CalibrationSet({dir / "n.safetensors"}).inputs_of("model.layers.0.self_attn.q_proj.weight"), 3, 1); },
                                 {"n.safetensors", "hessian_tokens", "positive token count"});
}

TEST(ImatrixUse, ReachesTheQuantizerAndIsMatchedByRole) {
  TempDir dir;
  write_demo_checkpoint(dir / "demo");
  write_demo_calibration(dir / "calib.safetensors");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const Imatrix m = compute_imatrix(ck, CalibrationSet({dir / "calib.safetensors"}));
  write_imatrix_gguf(dir / "i.gguf", m, false);
  const Imatrix loaded = read_imatrix(dir / "i.gguf");  // GGUF names, matched to the checkpoint's HF names
  QuantizeOptions o;
  o.type = "Q4_K_S";
  o.pure = true;
  const Plan plan = make_plan(ck, o, &loaded, "i.gguf");
  ASSERT_TRUE(plan.imatrix);
  EXPECT_EQ(plan.imatrix->missing, (std::vector<std::string>{"token_embd.weight", "output.weight"}));
  quantize_to_gguf(ck, plan, dir / "w.gguf", false);
  const Plan plain = make_plan(ck, o);
  quantize_to_gguf(ck, plain, dir / "p.gguf", false);

  const GgufFile weighted(dir / "w.gguf"), unweighted(dir / "p.gguf");
  EXPECT_EQ(*weighted.find("quantize.imatrix.entries_count")->get_if<int32_t>(), 14);
  const std::string name = "blk.1.ffn_down.weight";  // model.layers.1.mlp.down_proj.weight in the checkpoint
  const auto* entry = ck.find("model.layers.1.mlp.down_proj.weight");
  std::vector<float> x(entry->tensor->numel());
  convert_to_f32(entry->bytes().data(), entry->tensor->dtype, x.data(), x.size());
  const auto imp = loaded.tensors.at("blk.1.ffn_down.weight").importance();
  const auto f = format_for_ggml_type(GgmlType::Q4_K);
  const size_t cols = entry->tensor->shape[1], rb = f->row_bytes(cols);
  std::vector<uint8_t> row(rb);
  const auto wdata = weighted.data(*weighted.find_tensor(name));
  const auto pdata = unweighted.data(*unweighted.find_tensor(name));
  EXPECT_FALSE(std::equal(wdata.begin(), wdata.end(), pdata.begin()));
  for (size_t r = 0; r < entry->tensor->shape[0]; ++r) {
    f->quantize_row(x.data() + r * cols, row.data(), cols, imp.data());
    ASSERT_TRUE(std::equal(row.begin(), row.end(), wdata.begin() + static_cast<std::ptrdiff_t>(r * rb))) << r;
  }
  // A width mismatch is an error naming both sides.
  Imatrix bad;
  bad.tensors["blk.0.attn_q.weight"] = {std::vector<float>(7, 1.0f), {1.0f}};
  test::expect_error<InputError>([&] { make_plan(ck, o, &bad, "bad.gguf"); },
                                 {"bad.gguf", "blk.0.attn_q.weight", "q_proj", "rows of 256"});
}

}  // namespace
}  // namespace qz
