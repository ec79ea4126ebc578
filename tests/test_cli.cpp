// The quantize executable: options, exit codes, messages.
#include <gtest/gtest.h>

#include <functional>

#include "qz/io/imatrix.hpp"
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qz/io/gguf.hpp"
#include "cli_runner.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

using Result = test::CliResult;

Result quantize(const std::string& args) { return test::run_quantize(args); }

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
  EXPECT_EQ(j["tensors"][0]["ggml_type"], "Q4_1");  // stored as llama.cpp's type that holds the grid

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

// A checkpoint without its config.json still converts (tensors keep their names), with a warning that llama.cpp will
// not run the result.
TEST(Cli, ACheckpointWithoutConfigWarnsThatLlamaCppWillNotRunIt) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  fs::remove(dir / "demo" / "config.json");
  const Result r = quantize(demo + " -o " + (dir / "o.gguf").string() + " --type Q8_0");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "no config.json")) << r.output;
  EXPECT_TRUE(contains(r.output, "llama.cpp will not run it")) << r.output;
  const GgufFile g(dir / "o.gguf");
  EXPECT_EQ(g.find("general.architecture"), nullptr);
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

namespace qz {
namespace {

// stdout alone, with stderr in `err` (kept in `e`, a file the caller owns).
Result quantize_stdout(const std::string& args, const fs::path& e, std::string* err) {
  const std::string cmd = std::string(QZ_QUANTIZE_BIN) + " " + args + " 2>" + e.string();
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  std::ifstream f(e);
  *err = std::string(std::istreambuf_iterator<char>(f), {});
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class CliConventions : public ::testing::Test {
 protected:
  void SetUp() override {
    demo_ = (dir_ / "demo").string();
    calib_ = demo_ + "/calib.safetensors";
    ASSERT_EQ(quantize("make-demo " + demo_).code, 0);
  }
  std::string out(const std::string& name) const { return (dir_ / name).string(); }
  TempDir dir_;
  std::string demo_, calib_;
};

TEST_F(CliConventions, OptionsAndPositionalsInAnyOrderRepeatableOptionsTakeOneValue) {
  // The command: --calib before the positional input.
  Result r = quantize("--method gptq --bits 4 --calib " + calib_ + " " + demo_ + " -o " + out("a.gguf"));
  ASSERT_EQ(r.code, 0) << r.output;
  // The default grid (4-bit asymmetric, groups of 128) goes into llama.cpp's Q4_1, and the run says so.
  EXPECT_TRUE(contains(r.output, "note: --method gptq 4-bit asymmetric groups of 128: stored as llama.cpp's Q4_1")) << r.output;
  EXPECT_EQ(GgufFile(out("a.gguf")).find_tensor("blk.0.attn_q.weight")->type, GgmlType::Q4_1);
  // Repeated --calib accumulates (twice the same file: twice the tokens in the file's metadata).
  r = quantize("--calib " + calib_ + " -o " + out("b.gguf") + " --calib " + calib_ + " " + demo_ + " --method gptq -q");
  ASSERT_EQ(r.code, 0) << r.output;
  const GgufFile g(out("b.gguf"));
  EXPECT_EQ(*g.find("quantize.calibration.tokens")->get_if<uint64_t>(), 2 * 256u);
  EXPECT_EQ(g.find("quantize.calibration.files")->get_if<GgufArray>()->items.size(), 2u);
  r = quantize("-o " + out("c.gguf") + " --tensor-type attn_q=Q8_0 --tensor-type ffn=Q5_0 " + demo_ + " --type Q4_0");
  ASSERT_EQ(r.code, 0) << r.output;
  const GgufFile c(out("c.gguf"));
  EXPECT_EQ(c.find_tensor("blk.0.attn_q.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(c.find_tensor("blk.0.ffn_up.weight")->type, GgmlType::Q5_0);
}

TEST_F(CliConventions, JsonToStdoutIsExactlyOneDocument) {
  for (const std::string& extra : std::vector<std::string>{"--dry-run", "--method gptq --calib " + calib_,
                                                            "--method awq --type Q4_0 --calib " + calib_}) {
    SCOPED_TRACE(extra);
    std::string err;
    const Result r = quantize_stdout(demo_ + " -o " + out("j.gguf") + " --force --json - " + extra, out("stderr.txt"), &err);
    ASSERT_EQ(r.code, 0) << err;
    const auto j = nlohmann::json::parse(r.output);  // throws on anything else on stdout
    EXPECT_EQ(j["tensors"].size(), 21u);
    EXPECT_TRUE(contains(err, "bits per weight")) << err;  // the human summary went to stderr
  }
}

TEST_F(CliConventions, HelpShowsRealDefaultsAndSubcommandHelpOnlyItsOptions) {
  const Result r = quantize("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_FALSE(contains(r.output, "{false}")) << r.output;
  EXPECT_TRUE(contains(r.output, "asymmetric (zero-point; the default)")) << r.output;
  EXPECT_TRUE(contains(r.output, "absmax values again, 8-bit in blocks of 256 (the default)")) << r.output;
  EXPECT_TRUE(contains(r.output, "clipping bounds (the default for awq)")) << r.output;
  EXPECT_TRUE(contains(r.output, "--damp FLOAT=0.01")) << r.output;
  EXPECT_TRUE(contains(r.output, "nf4_b<N>[_dq]")) << r.output;  // the whole format table, families included
  for (const char* sub : {"inspect", "dequantize", "imatrix", "make-demo"}) {
    SCOPED_TRACE(sub);
    const Result h = quantize(std::string(sub) + " --help");
    EXPECT_EQ(h.code, 0);
    for (const char* other : {"--method", "--damp", "--awq-clip", "Mixes", "--threads"})
      if (std::string(sub) != "imatrix" || std::string(other) != "--threads")  // imatrix runs the model: it has threads
        EXPECT_FALSE(contains(h.output, other)) << h.output;
  }
  EXPECT_TRUE(contains(quantize("dequantize --help").output, "--dtype"));
}

TEST_F(CliConventions, OptionsThatDoNothingAreAnErrorOrAWarningSayingWhy) {
  Result r = quantize("--method gptq --type Q4_K_M --bits 3 --calib " + calib_ + " " + demo_ + " -o " + out("x.gguf"));
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "--bits 3 does nothing with --type Q4_K_M")) << r.output;
  r = quantize(demo_ + " -o " + out("y.gguf") + " --type Q4_0 --damp 0.5");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--damp 0.5 is ignored: it applies to --method gptq and awq+gptq, not rtn")) << r.output;
  r = quantize(demo_ + " -o " + out("y.gguf") + " -f --type Q4_0 --gptq-refine 1");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--gptq-refine 1 is ignored: it applies to --method gptq and awq+gptq, not rtn")) << r.output;
  r = quantize("--method gptq --type Q4_0 --gptq-refine -1 --calib " + calib_ + " " + demo_ + " -o " + out("r.gguf"));
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "--gptq-refine -1: use a count in [0, 100]")) << r.output;
  // An imatrix for NF4 (written here so the check, not a missing file, is what fails).
  ASSERT_EQ(quantize("imatrix " + demo_ + " --calib " + calib_ + " -o " + out("i.gguf")).code, 0);
  r = quantize("--method nf4 --imatrix " + out("i.gguf") + " " + demo_ + " -o " + out("z.gguf"));
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "--imatrix does nothing with nf4_b64_dq")) << r.output;
  r = quantize("--method absmax --sym " + demo_ + " -o " + out("w.gguf"));
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "absmax is symmetric")) << r.output;
  r = quantize("--sym --asym --method gptq --dry-run " + demo_);
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "contradict")) << r.output;
  EXPECT_FALSE(fs::exists(out("x.gguf")) || fs::exists(out("z.gguf")) || fs::exists(out("w.gguf")));
}

TEST_F(CliConventions, LlamaQuantizeFlagsAndItsPositionalForm) {
  ASSERT_EQ(quantize("imatrix " + demo_ + " --calib " + calib_ + " -o " + out("i.gguf")).code, 0);
  const std::string json = out("r.json");
  Result r = quantize(demo_ + " -o " + out("l.gguf") + " --type Q4_K_S --output-tensor-type Q8_0 --token-embedding-type "
                      "F16 --imatrix " + out("i.gguf") + " --include-weights ffn_down --include-weights attn_v --json " + json);
  ASSERT_EQ(r.code, 0) << r.output;
  const GgufFile g(out("l.gguf"));
  EXPECT_EQ(g.find_tensor("output.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(g.find_tensor("token_embd.weight")->type, GgmlType::F16);
  const auto j = nlohmann::json::parse(std::ifstream(json));
  for (const auto& t : j["tensors"]) {
    const std::string name = t["name"];
    const bool included = contains(name, "ffn_down") || contains(name, "attn_v");
    if (t["format"] != "F32" && t["format"] != "F16" && name != "output.weight") EXPECT_EQ(t["imatrix"], included) << name;
  }
  r = quantize(demo_ + " -o " + out("e.gguf") + " --type Q4_K_S --leave-output-tensor --imatrix " + out("i.gguf") +
               " --exclude-weights attn --json " + json);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(GgufFile(out("e.gguf")).find_tensor("output.weight")->type, GgmlType::BF16);  // the demo stores BF16
  const auto report = nlohmann::json::parse(std::ifstream(json));  // (kept alive: the loop runs over a part of it)
  for (const auto& t : report["tensors"])
    if (contains(t["name"].get<std::string>(), "attn")) EXPECT_EQ(t["imatrix"], false) << t["name"];
  // llama-quantize's positional form: a pointer to -o and --type.
  r = quantize(demo_ + " " + out("p.gguf") + " Q4_K_M 4");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "llama-quantize's positional form")) << r.output;
  EXPECT_TRUE(contains(r.output, "-o " + out("p.gguf") + " --type Q4_K_M -t 4")) << r.output;
  EXPECT_FALSE(fs::exists(out("p.gguf")));
}

TEST_F(CliConventions, GptqDryRunPlansWithoutCalibrationAndShapesMatchInspect) {
  Result r = quantize("--method gptq --dry-run " + demo_);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "int4_asym_g128")) << r.output;
  ASSERT_EQ(quantize(demo_ + " -o " + out("s.gguf") + " --type Q4_0 -q").code, 0);
  const Result plan = quantize(demo_ + " --type Q4_0 --dry-run");
  const Result inspect = quantize("inspect " + out("s.gguf"));
  auto line_of = [](const std::string& text, const std::string& name) {
    const size_t at = text.find("\n" + name + " ");
    return at == std::string::npos ? std::string() : text.substr(at + 1, text.find('\n', at + 1) - at - 1);
  };
  for (const char* t : {"blk.0.ffn_down.weight", "token_embd.weight", "blk.1.attn_norm.weight"}) {
    const std::string a = line_of(plan.output, t), b = line_of(inspect.output, t);
    ASSERT_FALSE(a.empty() || b.empty()) << t;
    const std::string shape = t == std::string("blk.0.ffn_down.weight") ? "768 x 256" :
                              t == std::string("token_embd.weight") ? "256 x 512" : "256";
    EXPECT_TRUE(contains(a, " " + shape + " ")) << a;
    EXPECT_TRUE(contains(b, " " + shape + " ")) << b;
  }
}

}  // namespace
}  // namespace qz

namespace qz {
namespace {

TEST(CliSpellings, AbsmaxSpellsTheIntegerGridTypeAndSubcommandsTakeOptionsInAnyOrder) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  const std::string a = (dir / "a.gguf").string(), t = (dir / "t.gguf").string();
  ASSERT_EQ(quantize("--method absmax --bits 4 -g 128 " + demo + " -o " + a + " -q").code, 0);
  ASSERT_EQ(quantize(demo + " --type int4_sym_g128 -o " + t + " -q").code, 0);
  const GgufFile ga(a), gt(t);
  ASSERT_EQ(ga.tensors().size(), gt.tensors().size());
  for (const auto& info : ga.tensors()) {
    const GgufTensorInfo* other = gt.find_tensor(info.name);
    ASSERT_NE(other, nullptr) << info.name;
    const auto x = ga.data(info), y = gt.data(*other);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << info.name;  // the same bytes
  }
  EXPECT_EQ(*ga.find("quantize.target")->get_if<std::string>(), "int4_sym_g128");
  EXPECT_EQ(*gt.find("quantize.target")->get_if<std::string>(), "int4_sym_g128");
  // A subcommand's options before its positional, and a repeated --calib taking one file each.
  const Result r = quantize("imatrix --calib " + demo + "/calib.safetensors --calib " + demo + "/calib.safetensors " +
                            demo + " -o " + (dir / "i.gguf").string());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "from 2 calibration file(s)")) << r.output;
}

}  // namespace
}  // namespace qz

namespace qz {
namespace {

TEST(CliTokenize, PrintsIdsAndPiecesOrOneJsonDocument) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  std::ofstream(dir / "t.txt") << "ab";
  Result r = quantize("tokenize " + demo + " --text " + (dir / "t.txt").string());
  ASSERT_EQ(r.code, 0) << r.output;
  // BOS first (the demo's tokenizer_config adds it), then the SentencePiece pieces of "ab" with its dummy prefix.
  EXPECT_TRUE(contains(r.output, "     1 -> '<s>'\n")) << r.output;
  std::string err;
  r = quantize_stdout("tokenize --json - --text " + (dir / "t.txt").string() + " " + demo, dir / "err.txt", &err);
  ASSERT_EQ(r.code, 0) << err;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["tokens"][0], 1);
  EXPECT_EQ(j["tokens"].size(), j["pieces"].size());
  EXPECT_EQ(quantize("tokenize " + demo + " --text " + (dir / "missing.txt").string()).code, 2);
}

}  // namespace
}  // namespace qz

namespace qz {
namespace {

TEST(CliEval, PerplexityOfACheckpointAndItsQuantizedFileWithClearErrors) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  ASSERT_EQ(quantize(demo + " -o " + (dir / "q.gguf").string() + " --type Q4_0 -q").code, 0);
  std::vector<int> ids;
  for (int i = 0; i < 300; ++i) ids.push_back((i * 37 + 11) % 512);
  std::ofstream(dir / "t.json") << nlohmann::json(ids).dump();
  std::string err;
  const Result r = quantize_stdout("eval " + (dir / "q.gguf").string() + " --tokens " + (dir / "t.json").string() +
                                       " --ctx 64 --base " + demo + " --json -",
                                   dir / "err.txt", &err);
  ASSERT_EQ(r.code, 0) << err;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["chunks"], 4);  // 300 / 64
  EXPECT_EQ(j["scored"], 4 * (64 - 1 - 32));
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  EXPECT_GT(j["kl"]["mean"].get<double>(), 0.0);  // Q4_0 is not the float model
  EXPECT_TRUE(contains(err, "KL divergence from")) << err;
  // Text through the checkpoint's own tokenizer.
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat sat on the mat and looked at the dog. ";
  std::ofstream(dir / "t.txt") << text;
  EXPECT_EQ(quantize("eval " + demo + " --text " + (dir / "t.txt").string() + " --ctx 64 -q").code, 0);
  // A GGUF alone (no tokenizer files beside it) encodes text with its own vocabulary: the same perplexity.
  fs::create_directories(dir / "alone");
  fs::copy_file(dir / "q.gguf", dir / "alone" / "q.gguf");
  const Result from_gguf = quantize_stdout("eval " + (dir / "alone" / "q.gguf").string() + " --text " +
                                               (dir / "t.txt").string() + " --ctx 64 --json -", dir / "err2.txt", &err);
  const Result from_dir = quantize_stdout("eval " + (dir / "q.gguf").string() + " --tokenizer " + demo + " --text " +
                                              (dir / "t.txt").string() + " --ctx 64 --json -", dir / "err3.txt", &err);
  ASSERT_EQ(from_gguf.code, 0) << from_gguf.output;
  ASSERT_EQ(from_dir.code, 0) << from_dir.output;
  EXPECT_EQ(nlohmann::json::parse(from_gguf.output)["ppl"], nlohmann::json::parse(from_dir.output)["ppl"]);
  EXPECT_EQ(nlohmann::json::parse(from_gguf.output)["tokens"], nlohmann::json::parse(from_dir.output)["tokens"]);
  // Bad input: too few tokens, ids outside the vocabulary, a context longer than the model's, no text at all.
  std::ofstream(dir / "short.json") << "[1, 2, 3]";
  Result bad = quantize("eval " + demo + " --tokens " + (dir / "short.json").string() + " --ctx 64");
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(contains(bad.output, "needs at least 128")) << bad.output;
  std::ofstream(dir / "oov.json") << "[1, 99999]";
  bad = quantize("eval " + demo + " --tokens " + (dir / "oov.json").string());
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(contains(bad.output, "oov.json: token 1: id 99999")) << bad.output;
  bad = quantize("eval " + demo + " --tokens " + (dir / "t.json").string() + " --ctx 100000");
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(contains(bad.output, "longer than the model's context")) << bad.output;
  EXPECT_EQ(quantize("eval " + demo).code, 2);
}

TEST(CliCalibText, GptqAwqAndImatrixFromTextWithTheKindInTheReportAndClearErrors) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  std::string text;
  for (int i = 0; i < 120; ++i) text += "the cat sat on the mat and looked at the dog " + std::to_string(i) + ".\n";
  std::ofstream(dir / "c.txt") << text;
  const std::string json = (dir / "r.json").string();
  // The mission's command, with text: options in any order.
  Result r = quantize("--calib " + (dir / "c.txt").string() + " --method gptq " + demo + " --bits 4 -o " +
                      (dir / "g.gguf").string() + " --calib-samples 4 --calib-seqlen 64 --json " + json);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "calibration: block 2/2 quantized")) << r.output;
  // The summary says what the file was taken as and how it was used.
  EXPECT_TRUE(contains(r.output, "calibration: c.txt (text), 256 tokens in 4 windows, inputs from the quantized earlier "
                                 "blocks")) << r.output;
  auto j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_EQ(j["calibration"]["kind"], "text");
  EXPECT_EQ(j["calibration"]["windows"], 4);
  EXPECT_EQ(j["calibration"]["tokens"], 4 * 64);
  EXPECT_TRUE(j["calibration"]["block_by_block"].get<bool>());
  size_t gptq = 0;
  double gptq_seconds = 0;
  for (const auto& t : j["tensors"]) {
    if (t["method"] != "gptq") continue;
    ++gptq;
    // Each tensor's own time in the block pass (not 0 for all but a block's first, which waited for the pass).
    EXPECT_GT(t["seconds"].get<double>(), 1e-4) << t["name"];
    gptq_seconds += t["seconds"].get<double>();
  }
  EXPECT_EQ(gptq, 14u);
  EXPECT_LT(gptq_seconds, j["totals"]["wall_seconds"].get<double>());
  // Fewer tokens than asked: a warning with the count used.
  r = quantize(demo + " -o " + (dir / "g2.gguf").string() + " --method gptq --calib " + (dir / "c.txt").string() +
               " --calib-samples 1000 --calib-float-inputs --json " + json);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "fewer than the 1000 x 512")) << r.output;
  j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_FALSE(j["calibration"]["block_by_block"].get<bool>());
  // JSON lines and AWQ.
  std::ofstream(dir / "c.jsonl") << "{\"text\": \"the cat sat on the mat\"}\n{\"text\": \"a dog ran after the cat\"}\n";
  r = quantize(demo + " -o " + (dir / "a.gguf").string() + " --method awq --type Q4_0 --calib " + (dir / "c.jsonl").string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "awq ")) << r.output;
  // imatrix from text, as llama-imatrix chunks it.
  r = quantize("imatrix " + demo + " --calib " + (dir / "c.txt").string() + " -c 64 -o " + (dir / "i.gguf").string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "chunks of 64 tokens")) << r.output;
  const Imatrix im = read_imatrix(dir / "i.gguf");
  EXPECT_EQ(im.chunk_size, 64u);
  EXPECT_GT(im.chunk_count, 2u);
  EXPECT_EQ(im.tensors.size(), 14u);
  // Bad input: an unknown kind, text and activations mixed, malformed JSON lines, a text too short for imatrix.
  std::ofstream(dir / "c.bin") << "x";
  r = quantize(demo + " -o " + (dir / "x.gguf").string() + " --method gptq --calib " + (dir / "c.bin").string());
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "unknown kind of file '.bin'")) << r.output;
  r = quantize(demo + " -o " + (dir / "x.gguf").string() + " --method gptq --calib " + (dir / "c.txt").string() +
               " --calib " + demo + "/calib.safetensors");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "not both")) << r.output;
  std::ofstream(dir / "bad.jsonl") << "{\"text\": \"a\"}\n[1, 2]\n";
  r = quantize(demo + " -o " + (dir / "x.gguf").string() + " --method gptq --calib " + (dir / "bad.jsonl").string());
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "bad.jsonl:2")) << r.output;
  std::ofstream(dir / "short.txt") << "the cat";
  r = quantize("imatrix " + demo + " --calib " + (dir / "short.txt").string() + " -o " + (dir / "i2.gguf").string());
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "needs at least 2 x ctx")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
}

// An input is never replaced, whatever --force says; an output that is a directory or not a regular file is refused
// with a message that says so (issue 16, defects 3, 4 and 9).
TEST(CliOutputSafety, NoInputIsEverOverwrittenAndOnlyRegularFilesAreReplaced) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  std::vector<fs::path> shards;
  for (const auto& e : fs::directory_iterator(dir / "demo"))
    if (e.path().extension() == ".safetensors" && e.path().filename() != "calib.safetensors") shards.push_back(e.path());
  ASSERT_FALSE(shards.empty());
  std::sort(shards.begin(), shards.end());
  const auto before = test::read_bytes(shards.front());
  ASSERT_EQ(quantize(demo + " -o " + (dir / "q.gguf").string() + " --type Q4_0 -q").code, 0);
  const auto q_before = test::read_bytes(dir / "q.gguf");
  fs::create_symlink(shards.front(), dir / "link.safetensors");
  struct Case {
    std::string args, says;
  };
  const std::string shard = shards.front().string();
  for (const Case& c : std::vector<Case>{
           {shard + " -o " + shard + " --force --type Q8_0", "refusing to replace an input"},
           {demo + " -o " + shard + " --force --type Q8_0", "refusing to replace an input"},
           {demo + " -o " + (dir / "link.safetensors").string() + " --force --type Q8_0", "refusing to replace an input"},
           {demo + " -o " + demo + "/calib.safetensors --force --method gptq --calib " + demo + "/calib.safetensors", "refusing to replace an input"},
           {"dequantize " + (dir / "q.gguf").string() + " -o " + (dir / "q.gguf").string() + " --force", "refusing to replace an input"},
           {"imatrix " + demo + " --calib " + demo + "/calib.txt -o " + demo + "/calib.txt --force", "refusing to replace an input"},
           {demo + " -o /dev/full --force --type Q8_0", "not a regular file"},
           {demo + " -o " + dir.path().string() + " --type Q8_0", "is a directory"},
           {demo + " -o " + dir.path().string() + " --force --type Q8_0", "is a directory"},
           {demo + " -o " + demo + " --force --method nf4 --output-format bnb", "refusing to write over a checkpoint"}}) {
    SCOPED_TRACE(c.args);
    const Result r = quantize(c.args);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_TRUE(contains(r.output, c.says)) << r.output;
  }
  EXPECT_EQ(test::read_bytes(shards.front()), before);
  EXPECT_EQ(test::read_bytes(dir / "q.gguf"), q_before);
  EXPECT_TRUE(fs::is_character_file("/dev/full"));
  for (const auto& e : fs::directory_iterator(dir / "demo")) EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos);
}

// config.json is checked against the tensors and its value types and ranges (issue 16, defects 5 and 6): exit 2
// naming the file and the key, nothing written.
TEST(CliBadConfig, MistypedOutOfRangeOrContradictedHyperParametersAreErrorsNamingTheKey) {
  TempDir dir;
  const std::string demo = (dir / "demo").string();
  ASSERT_EQ(quantize("make-demo " + demo).code, 0);
  const auto original = nlohmann::json::parse(std::ifstream(dir / "demo" / "config.json"));
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> says;
  };
  for (const Case& c : std::vector<Case>{
           {[](nlohmann::json& j) { j["hidden_size"] = 128; }, {"config.json", "hidden_size 128", "token_embd.weight"}},
           {[](nlohmann::json& j) { j["intermediate_size"] = 700; }, {"config.json", "intermediate_size", "ffn_gate.weight"}},
           {[](nlohmann::json& j) { j["num_key_value_heads"] = 4; }, {"config.json", "attn_k.weight"}},
           {[](nlohmann::json& j) { j["num_hidden_layers"] = 3; }, {"config.json", "num_hidden_layers is 3", "2 blocks"}},
           {[](nlohmann::json& j) { j["vocab_size"] = 4000000000LL; }, {"config.json", "vocab_size"}},
           {[](nlohmann::json& j) { j["rms_norm_eps"] = 1e300; }, {"config.json", "rms_norm_eps", "float32"}},
           {[](nlohmann::json& j) { j["rope_theta"] = -1; }, {"config.json", "rope_theta"}},
           {[](nlohmann::json& j) { j["rope_scaling"] = {{"type", 5}}; }, {"config.json", "rope_scaling.type"}},
           {[](nlohmann::json& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", "2"}}; }, {"config.json", "rope_scaling.factor"}},
           {[](nlohmann::json& j) { j["architectures"] = {5}; }, {"config.json", "architectures"}}}) {
    nlohmann::json j = original;
    c.edit(j);
    SCOPED_TRACE(j.dump());
    std::ofstream(dir / "demo" / "config.json") << j.dump(2);
    const Result r = quantize(demo + " -o " + (dir / "x.gguf").string() + " --type Q8_0");
    EXPECT_EQ(r.code, 2) << r.output;
    for (const auto& part : c.says) EXPECT_TRUE(contains(r.output, part)) << r.output << "\nmissing: " << part;
    EXPECT_FALSE(fs::exists(dir / "x.gguf"));
  }
}

}  // namespace
}  // namespace qz
