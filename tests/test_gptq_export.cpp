// GPTQ checkpoints out (pipeline/gptq_export.hpp): the AutoGPTQ layout, read back by the importer
// (model/packed_linear.hpp) as the very weights the same run writes into GGUF.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/plan.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

struct GridRun {
  std::string method;
  int bits;
  int group;
  bool sym;
};

QuantizeJob job_of(const fs::path& demo, const GridRun& r, const fs::path& out, const std::string& format) {
  QuantizeJob j;
  j.inputs = {demo};
  j.output = out;
  set_method(j.options, r.method);
  j.options.bits = r.bits;
  j.options.group_size = r.group;
  if (r.method == "gptq") {
    j.options.symmetric = r.sym;
    j.calib = {demo / "calib.txt"};
    j.sampling.samples = 8;
    j.sampling.seqlen = 64;
  }
  j.output_format = format;
  j.force = true;
  return j;
}

TEST(GptqExport, TheCheckpointReadsBackAsTheWeightsOfTheSameRun) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  write_demo_calibration_text(dir / "demo" / "calib.txt", 120);
  for (const GridRun& r : {GridRun{"gptq", 4, 128, true}, GridRun{"gptq", 4, 64, false}, GridRun{"gptq", 3, 128, false},
                       GridRun{"absmax", 8, -1, true}}) {
    SCOPED_TRACE(fmt::format("{} {}-bit g{} {}", r.method, r.bits, r.group, r.sym ? "sym" : "asym"));
    std::vector<std::string> warnings;
    QuantizeEvents ev;
    ev.warn = [&](const std::string& w) { warnings.push_back(w); };
    run_quantize(job_of(dir / "demo", r, dir / "direct.gguf", "gguf"));
    run_quantize(job_of(dir / "demo", r, dir / "ckpt", "gptq"), ev);
    const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "ckpt" / "config.json"));
    const auto& q = cfg.at("quantization_config");
    EXPECT_EQ(q.at("quant_method"), "gptq");
    EXPECT_EQ(q.at("bits"), r.bits);
    EXPECT_EQ(q.at("group_size"), r.group);
    EXPECT_EQ(q.at("sym"), r.sym);
    EXPECT_TRUE(fs::exists(dir / "ckpt" / "quantize_config.json"));
    EXPECT_TRUE(fs::exists(dir / "ckpt" / "tokenizer.model"));
    const GgufFile direct(dir / "direct.gguf");
    // Every linear comes back as the values the run stored (read through the importer, in llama.cpp's row order).
    const Checkpoint packed = Checkpoint::open(dir / "ckpt");
    const Plan plan = make_plan(packed, QuantizeOptions{});
    size_t linears = 0;
    for (const auto& t : plan.tensors) {
      if (!t.packed) continue;
      ++linears;
      std::vector<float> back(t.rows * t.cols);
      read_rows(t, 0, t.rows, back.data());
      const std::vector<float> want = dequantize_tensor(direct, *direct.find_tensor(t.name));
      ASSERT_EQ(back.size(), want.size());
      // Symmetric grids are exact; Q4_1's stored min moves values by at most |m| 2^-11 from the grid the GPTQ layout
      // holds exactly (|m| <= 15 d, d <= max |w| / 7).
      double worst = 0, big = 0;
      size_t at = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        big = std::max(big, std::fabs(static_cast<double>(want[i])));
        if (std::fabs(static_cast<double>(back[i]) - want[i]) > worst) {
          worst = std::fabs(static_cast<double>(back[i]) - want[i]);
          at = i;
        }
      }
      if (r.sym || r.bits == 3) EXPECT_EQ(worst, 0.0) << t.name << " at " << at << ": " << back[at] << " vs " << want[at];
      else EXPECT_LE(worst, 3 * big * 0x1p-11) << t.name;
    }
    EXPECT_EQ(linears, 14u);
    EXPECT_EQ(warnings.empty(), q.at("checkpoint_format") == "gptq") << (warnings.empty() ? "" : warnings.front());
  }
}

// Past --max-shard-size the checkpoint is shards with their index (as save_pretrained), read back as one.
TEST(GptqExport, ALargeCheckpointIsShardedWithItsIndex) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  QuantizeJob j = job_of(dir / "demo", GridRun{"absmax", 4, 128, true}, dir / "ckpt", "gptq");
  j.options.max_shard_size = "400K";
  run_quantize(j);
  EXPECT_FALSE(fs::exists(dir / "ckpt" / "model.safetensors"));
  const nlohmann::json index = nlohmann::json::parse(std::ifstream(dir / "ckpt" / "model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [name, file] : index.at("weight_map").items()) shards.insert(file.get<std::string>());
  EXPECT_GT(shards.size(), 2u);
  uint64_t total = 0;
  for (const auto& s : shards) {
    EXPECT_TRUE(fs::exists(dir / "ckpt" / s)) << s;
    const SafetensorsFile f(dir / "ckpt" / s);
    for (const auto& t : f.tensors()) total += t.end - t.begin;
  }
  EXPECT_EQ(index.at("metadata").at("total_size"), total);
  QuantizeJob whole = job_of(dir / "demo", GridRun{"absmax", 4, 128, true}, dir / "one", "gptq");
  run_quantize(whole);
  const Checkpoint sharded = Checkpoint::open(dir / "ckpt"), one = Checkpoint::open(dir / "one");
  const Plan a = make_plan(sharded, QuantizeOptions{}), b = make_plan(one, QuantizeOptions{});
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    std::vector<float> x(a.tensors[i].rows * a.tensors[i].cols), y(x.size());
    read_rows(a.tensors[i], 0, a.tensors[i].rows, x.data());
    read_rows(b.tensors[i], 0, b.tensors[i].rows, y.data());
    EXPECT_EQ(x, y) << a.tensors[i].name;
  }
}

TEST(GptqExport, OnlyIntegerGridsOfTheBitsGptqPacksAndACheckpointDirectory) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  QuantizeJob j;
  j.inputs = {dir / "demo"};
  j.output = dir / "out";
  j.output_format = "gptq";
  j.options.type = "Q4_K_M";
  EXPECT_THROW(run_quantize(j), UsageError);
  j.options.type.clear();
  set_method(j.options, "absmax");
  j.options.bits = 5;
  EXPECT_THROW(run_quantize(j), UsageError);
  j.options.bits = 4;
  j.output = dir / "demo";  // over the input
  EXPECT_THROW(run_quantize(j), UsageError);
}

}  // namespace
}  // namespace qz
