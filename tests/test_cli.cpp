// The quantize executable: options, exit codes, messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qz/io/gguf.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

struct Result {
  int code;
  std::string output;  // stdout and stderr
};

Result quantize(const std::string& args) {
  const std::string cmd = std::string(QZ_QUANTIZE_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(Cli, HelpListsEveryOption) {
  const Result r = quantize("--help");
  EXPECT_EQ(r.code, 0);
  for (const char* opt : {"--method", "--bits", "--group-size", "--type", "--threads", "--json", "--dry-run", "--force",
                          "--verbose", "--quiet", "--tensor-type", "--version", "inspect", "dequantize", "make-demo", "Q8_0"})
    EXPECT_TRUE(contains(r.output, opt)) << opt;
  EXPECT_EQ(quantize("--version").code, 0);
  EXPECT_TRUE(contains(quantize("--version").output, "quantize 0."));
}

TEST(Cli, BadUsageExitsWithTwoAndSaysWhy) {
  TempDir dir;
  ASSERT_EQ(quantize("make-demo " + (dir / "demo").string()).code, 0);
  const std::string demo = (dir / "demo").string();
  const std::string out = (dir / "o.gguf").string();
  Result r = quantize(demo + " -o " + out + " --method magic");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "--method magic")) << r.output;
  r = quantize(demo + " -o " + out + " --type q3_xx");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "--type q3_xx: unknown type")) << r.output;
  r = quantize(demo);
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "-o OUTPUT.gguf")) << r.output;
  r = quantize("--no-such-option");
  EXPECT_EQ(r.code, 2);
  r = quantize(demo + " -o " + out + " --method absmax --bits 12");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "--bits 12")) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST(Cli, MalformedInputExitsWithTwoNamingTheFile) {
  TempDir dir;
  test::write_bytes(dir / "broken.safetensors", {0xFF, 0xFF, 0, 0, 0, 0, 0, 0, '{'});
  const Result r = quantize((dir / "broken.safetensors").string() + " -o " + (dir / "o.gguf").string());
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "broken.safetensors")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "o.gguf"));
  const Result i = quantize("inspect " + (dir / "broken.safetensors").string());
  EXPECT_EQ(i.code, 2);
  EXPECT_TRUE(contains(i.output, "not a GGUF file")) << i.output;
}

TEST(Cli, QuantizeInspectDequantizeAndJsonReport) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  const std::string out = (dir / "o.gguf").string();
  const std::string json = (dir / "r.json").string();
  Result r = quantize(demo + " -o " + out + " --method zeropoint --bits 4 --group-size 64 --json " + json);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "bits per weight")) << r.output;
  EXPECT_TRUE(contains(r.output, "[21/21]")) << r.output;  // plain progress lines when not on a terminal
  const auto j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_EQ(j["tensors"].size(), 21u);
  EXPECT_EQ(j["totals"]["output_bytes"], fs::file_size(out));
  EXPECT_EQ(j["tensors"][0]["format"], "int4_asym_g64");

  r = quantize(demo + " -o " + out);  // exists
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "--force")) << r.output;
  EXPECT_EQ(quantize(demo + " -o " + out + " --force -q").code, 0);

  r = quantize("inspect " + out);
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(contains(r.output, "general.quantization_version")) << r.output;
  EXPECT_TRUE(contains(r.output, "output.weight")) << r.output;
  EXPECT_TRUE(contains(r.output, "llama.block_count")) << r.output;
  EXPECT_TRUE(contains(r.output, "q8_0")) << r.output;

  r = quantize("dequantize " + out + " -o " + (dir / "back.safetensors").string());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir / "back.safetensors"));
}

TEST(Cli, DryRunPrintsThePlanAndWritesNothing) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  const Result r = quantize(demo + " -o " + (dir / "o.gguf").string() + " --dry-run --type q8_0 --tensor-type 'embed=f16'");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "token_embd.weight")) << r.output;
  EXPECT_TRUE(contains(r.output, "--tensor-type embed=f16")) << r.output;
  EXPECT_TRUE(contains(r.output, "1-D tensors")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "o.gguf"));
}

}  // namespace
}  // namespace qz

namespace qz {
namespace {

TEST(Cli, GptqOnTheDemoReportsLowerOutputErrorThanRoundToNearest) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  const std::string json = (dir / "r.json").string();
  const Result r = quantize(demo + " -o " + (dir / "g.gguf").string() + " --method gptq --bits 4 --calib " + demo +
                            "/calib.safetensors --compare-rtn --json " + json);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "GPTQ mean relative output error")) << r.output;
  const auto j = nlohmann::json::parse(std::ifstream(json));
  size_t layers = 0;
  for (const auto& t : j["tensors"]) {
    if (t["method"] != "gptq") continue;
    ++layers;
    EXPECT_LT(t["gptq"]["output_rel_error"].get<double>(), t["gptq"]["rtn_output_rel_error"].get<double>());
  }
  EXPECT_EQ(layers, 14u);
  const Result missing = quantize(demo + " -o " + (dir / "x.gguf").string() + " --method gptq");
  EXPECT_EQ(missing.code, 2);
  EXPECT_TRUE(contains(missing.output, "--calib")) << missing.output;
}

TEST(Cli, AwqOnTheDemoReportsEveryGroupAndFoldsIntoLlamaCppTypes) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  const std::string json = (dir / "r.json").string(), out = (dir / "a.gguf").string();
  const Result r = quantize(demo + " -o " + out + " --method awq --type Q4_K_M --calib " + demo +
                            "/calib.safetensors --awq-duo-scaling --awq-tokens 128 --json " + json);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "awq 1/8 blk.0.attn_norm.weight -> blk.0.attn_q.weight")) << r.output;
  EXPECT_TRUE(contains(r.output, "grouped-query attention")) << r.output;
  EXPECT_TRUE(contains(r.output, "awq: searches took")) << r.output;
  const auto j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_EQ(j["method"], "awq");
  EXPECT_EQ(j["awq"]["groups"].size(), 8u);
  EXPECT_EQ(j["awq"]["duo_scaling"], true);
  EXPECT_EQ(j["awq"]["max_tokens"], 128);
  EXPECT_EQ(j["awq"]["clips"].size(), 10u);
  size_t scaled = 0;
  for (const auto& t : j["tensors"]) {
    if (t["method"] == "awq+rtn") ++scaled;
    if (t["name"] == "blk.0.attn_norm.weight") EXPECT_TRUE(contains(t["reason"].get<std::string>(), "AWQ scales")) << t;
  }
  EXPECT_EQ(scaled, 12u);  // q, k, v, gate, up, down per layer (o is not scaled under GQA)
  // A llama.cpp mix: general.file_type and native types only.
  const Result inspect = quantize("inspect " + out);
  EXPECT_TRUE(contains(inspect.output, "Q4_K")) << inspect.output;

  const Result missing = quantize(demo + " -o " + (dir / "x.gguf").string() + " --method awq");
  EXPECT_EQ(missing.code, 2);
  EXPECT_TRUE(contains(missing.output, "--calib")) << missing.output;
  const Result both = quantize(demo + " -o " + (dir / "y.gguf").string() + " --method awq+gptq --type Q4_0 --calib " +
                               demo + "/calib.safetensors -q --json " + json);
  ASSERT_EQ(both.code, 0) << both.output;
  const auto jb = nlohmann::json::parse(std::ifstream(json));
  EXPECT_EQ(jb["awq"]["clip"], false);
  size_t gptq = 0;
  for (const auto& t : jb["tensors"]) gptq += t["method"] == "awq+gptq";
  EXPECT_EQ(gptq, 12u);
}

}  // namespace
}  // namespace qz
