// `quantize batch` and quality gates, through the executable: a recipe over two demo models, the manifest and its
// resume rules, shards and their merge, JUnit and JSON reports, gates that fail with exit 3, and recipe errors.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cli_runner.hpp"
#include "qz/core/sha256.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::run_quantize;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

json read_json(const fs::path& p) { return json::parse(std::ifstream(p)); }

void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(2); }

// Two demo models (different seeds) and a recipe of five outputs over them, in a fresh directory.
class Batch : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(run_quantize("make-demo " + (dir_ / "a").string() + " -q").code, 0);
    ASSERT_EQ(run_quantize("make-demo " + (dir_ / "b").string() + " --seed 7 -q").code, 0);
    recipe_ = {{"output_dir", "out"},
               {"defaults", {{"threads", 2}}},
               {"models",
                {{{"path", "a"},
                  {"outputs",
                   {{{"type", "Q4_K_M"}, {"imatrix_calib", "a/calib.txt"}},
                    {{"type", "Q8_0"}},
                    {{"name", "a-gptq.gguf"}, {"method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"calib", "a/calib.safetensors"}}}}},
                 {{"path", "b"}, {"name", "bee"}, {"threads", 1}, {"outputs", {{{"method", "absmax"}, {"bits", 8}}, {{"type", "Q4_0"}}}}}}}};
  }
  fs::path recipe_file() {
    write_json(dir_ / "recipe.json", recipe_);
    return dir_ / "recipe.json";
  }
  test::CliResult batch(const std::string& extra = "") { return run_quantize("batch " + recipe_file().string() + " " + extra); }
  fs::path out() const { return dir_ / "out"; }
  std::map<std::string, fs::file_time_type> mtimes() const {
    std::map<std::string, fs::file_time_type> m;
    for (const auto& e : fs::directory_iterator(out()))
      if (e.path().extension() == ".gguf") m[e.path().filename().string()] = fs::last_write_time(e.path());
    return m;
  }
  test::TempDir dir_;
  json recipe_;
};

TEST_F(Batch, MakesEveryOutputRecordsItAndARerunSkipsWhatIsDoneAndUnchanged) {
  const auto r = batch("--json " + (dir_ / "r.json").string() + " --junit " + (dir_ / "j.xml").string());
  ASSERT_EQ(r.code, 0) << r.output;
  const std::vector<std::string> ids = {"a-Q4_K_M.gguf", "a-Q8_0.gguf", "a-gptq.gguf", "bee-absmax-8bit.gguf", "bee-Q4_0.gguf"};
  const json m = read_json(out() / "quantize-manifest.json");
  for (const auto& id : ids) {
    SCOPED_TRACE(id);
    ASSERT_TRUE(m["records"].contains(id)) << m.dump(1);
    const json& rec = m["records"][id];
    EXPECT_EQ(rec["status"], "done");
    EXPECT_EQ(rec["sha256"], sha256_file(out() / id));  // the digest of the file as it is
    EXPECT_EQ(rec["bytes"], fs::file_size(out() / id));
    EXPECT_TRUE(rec["report"].contains("tensors"));
  }
  // Each output is what the main command makes with the same options.
  ASSERT_EQ(run_quantize((dir_ / "a").string() + " -o " + (dir_ / "single.gguf").string() + " --type Q8_0 -q").code, 0);
  EXPECT_EQ(test::read_bytes(dir_ / "single.gguf"), test::read_bytes(out() / "a-Q8_0.gguf"));
  EXPECT_EQ(m["records"]["a-gptq.gguf"]["settings"]["group_size"], 32);
  EXPECT_EQ(m["records"]["bee-absmax-8bit.gguf"]["report"]["tensors"][2]["format"], "int8_sym_g128");
  // One imatrix for the model, recorded beside the outputs.
  EXPECT_TRUE(fs::exists(out() / "a.calib.imatrix.gguf"));
  // The reports: JSON with every output, JUnit with one test case per output.
  const json report = read_json(dir_ / "r.json");
  EXPECT_EQ(report["outputs"].size(), 5u);
  EXPECT_EQ(report["exit_code"], 0);
  std::ifstream jx(dir_ / "j.xml");
  const std::string xml((std::istreambuf_iterator<char>(jx)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(contains(xml, "tests=\"5\" failures=\"0\" errors=\"0\"")) << xml;
  EXPECT_TRUE(contains(xml, "<testcase classname=\"bee\" name=\"bee-Q4_0.gguf\"")) << xml;

  // A rerun touches nothing.
  const auto before = mtimes();
  const auto again = batch("--json " + (dir_ / "r2.json").string());
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_EQ(mtimes(), before);
  const json r2 = read_json(dir_ / "r2.json");
  for (const auto& o : r2["outputs"]) EXPECT_TRUE(o["up_to_date"].get<bool>()) << o.dump();

  // A changed setting, a changed input and a removed output are made again; nothing else is.
  recipe_["models"][0]["outputs"][1]["type"] = "Q6_K";
  recipe_["models"][0]["outputs"][1]["name"] = "a-Q8_0.gguf";
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  { std::ofstream(dir_ / "b" / "config.json", std::ios::app) << "\n"; }
  fs::remove(out() / "a-gptq.gguf");
  const auto third = batch("--json " + (dir_ / "r3.json").string());
  ASSERT_EQ(third.code, 0) << third.output;
  std::map<std::string, std::string> why;
  const json r3 = read_json(dir_ / "r3.json");
  for (const auto& o : r3["outputs"])
    why[o["id"]] = o["up_to_date"].get<bool>() ? "kept" : "made";
  EXPECT_EQ(why, (std::map<std::string, std::string>{{"a-Q4_K_M.gguf", "kept"}, {"a-Q8_0.gguf", "made"},
                                                      {"a-gptq.gguf", "made"}, {"bee-absmax-8bit.gguf", "made"},
                                                      {"bee-Q4_0.gguf", "made"}}));
  EXPECT_EQ(mtimes()["a-Q4_K_M.gguf"], before.at("a-Q4_K_M.gguf"));
  for (const auto& e : fs::directory_iterator(out())) EXPECT_FALSE(contains(e.path().string(), ".tmp.")) << e.path();
}

TEST_F(Batch, ShardsSplitTheOutputsAndTheirManifestsMerge) {
  const auto s1 = batch("--shard 1/2 -q"), s2 = batch("--shard 2/2 -q");
  ASSERT_EQ(s1.code, 0) << s1.output;
  ASSERT_EQ(s2.code, 0) << s2.output;
  const json m1 = read_json(out() / "quantize-manifest-1-of-2.json"), m2 = read_json(out() / "quantize-manifest-2-of-2.json");
  EXPECT_EQ(m1["records"].size() + m2["records"].size(), 5u + 1u);  // + the shared imatrix, made by the shard that needs it
  for (const auto& [id, rec] : m1["records"].items()) EXPECT_FALSE(m2["records"].contains(id)) << id;
  const auto merged = batch("--merge");
  ASSERT_EQ(merged.code, 0) << merged.output;
  EXPECT_EQ(read_json(out() / "quantize-manifest.json")["records"].size(), 6u);
  // After the merge, an unsharded run finds everything done.
  const auto before = mtimes();
  const auto all = batch("--json " + (dir_ / "r.json").string());
  ASSERT_EQ(all.code, 0) << all.output;
  EXPECT_EQ(mtimes(), before);
  EXPECT_EQ(read_json(dir_ / "r.json")["counts"]["up_to_date"], 5);
  EXPECT_EQ(batch("--shard 3/2").code, 2);
}

TEST_F(Batch, AnInterruptedBatchRerunFinishesTheJob) {
  // Slow outputs (GPTQ), a SIGTERM once the first is recorded; the rerun makes the rest and keeps the first.
  for (auto& o : recipe_["models"][0]["outputs"]) o = {{"method", "gptq"}, {"bits", 4}, {"calib", "a/calib.txt"}, {"calib_samples", 16}};
  for (int i = 0; i < 3; ++i) recipe_["models"][0]["outputs"][i]["name"] = "g" + std::to_string(i) + ".gguf";
  recipe_["models"].erase(1);
  const std::string cmd = std::string(QZ_QUANTIZE_BIN) + " batch " + recipe_file().string() + " -q";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const fs::path manifest = out() / "quantize-manifest.json";
  for (int i = 0; i < 4800 && !fs::exists(manifest); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // up to 4 min (sanitizer builds are slow)
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(fs::exists(manifest));
  const size_t recorded = read_json(manifest)["records"].size();
  const auto first = mtimes();
  for (const auto& e : fs::directory_iterator(out())) EXPECT_FALSE(contains(e.path().string(), ".tmp.")) << e.path();
  const auto rerun = batch("--json " + (dir_ / "r.json").string());
  ASSERT_EQ(rerun.code, 0) << rerun.output;
  EXPECT_EQ(read_json(manifest)["records"].size(), 3u);
  size_t kept = 0;
  const json report = read_json(dir_ / "r.json");
  for (const auto& o : report["outputs"]) kept += o["up_to_date"].get<bool>();
  EXPECT_EQ(kept, recorded);  // what was recorded before the signal is not made again
  for (const auto& [name, t] : first) EXPECT_EQ(mtimes()[name], t) << name;
}

TEST_F(Batch, FailedGatesExitThreeKeepTheOutputAndAMissingModelFailsOnlyItsOutputs) {
  recipe_["defaults"]["gates"] = {{"eval_text", "a/calib.txt"}, {"eval_ctx", 128}, {"eval_chunks", 8}};
  recipe_["models"][0]["outputs"] = {{{"type", "Q8_0"}, {"max_kl", 0.01}}, {{"type", "Q2_K"}, {"gates", {{"min_top1", 0.999}}}}};
  recipe_["models"][1]["outputs"] = {{{"type", "Q8_0"}}};
  const auto r = batch("--junit " + (dir_ / "j.xml").string() + " --json " + (dir_ / "r.json").string());
  EXPECT_EQ(r.code, 3) << r.output;
  EXPECT_TRUE(contains(r.output, "top-1 agreement")) << r.output;
  EXPECT_TRUE(fs::exists(out() / "a-Q2_K.gguf"));  // kept, marked failed
  const json m = read_json(out() / "quantize-manifest.json");
  EXPECT_EQ(m["records"]["a-Q2_K.gguf"]["status"], "gate_failed");
  EXPECT_EQ(m["records"]["a-Q8_0.gguf"]["status"], "done");
  // The figures are the engine's: the float model's own perplexity on the text, and the ratio.
  const json q = m["records"]["a-Q8_0.gguf"]["quality"];
  const auto e = run_quantize("eval " + (dir_ / "a").string() + " --text " + (dir_ / "a" / "calib.txt").string() +
                              " --ctx 128 --chunks 8 --json " + (dir_ / "e.json").string() + " -q");
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_NEAR(q["base_ppl"].get<double>(), read_json(dir_ / "e.json")["ppl"].get<double>(), 1e-9);
  EXPECT_NEAR(q["ppl_increase"].get<double>(), q["ppl"].get<double>() / q["base_ppl"].get<double>() - 1, 1e-12);
  EXPECT_LT(q["kl_mean"].get<double>(), 0.01);
  std::ifstream jx(dir_ / "j.xml");
  const std::string xml((std::istreambuf_iterator<char>(jx)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(contains(xml, "tests=\"3\" failures=\"1\" errors=\"0\"")) << xml;
  EXPECT_TRUE(contains(xml, "<failure message=\"top-1 agreement")) << xml;

  // A missing model: its outputs fail (exit 2 at the end, listed), the others are still made.
  recipe_["models"].push_back({{"path", "missing"}, {"outputs", {{{"type", "Q4_0"}}}}});
  const auto m2 = batch();
  EXPECT_EQ(m2.code, 2) << m2.output;
  EXPECT_TRUE(contains(m2.output, "missing-Q4_0.gguf (error)")) << m2.output;
  EXPECT_EQ(read_json(out() / "quantize-manifest.json")["records"]["missing-Q4_0.gguf"]["status"], "error");
}

// GPTQ outputs of one model on the same text with float inputs share one capture (made together, each block of the
// model run once for all of them); each is byte for byte what the main command makes alone. Sequential GPTQ does not
// share (its inputs come from its own quantized blocks), nor does an output with other sampling.
TEST_F(Batch, GptqOutputsWithFloatInputsShareOneCalibrationCaptureAndMatchTheirSingleRuns) {
  const json calib = {{"method", "gptq"}, {"calib", "a/calib.txt"}, {"calib_samples", 6}, {"calib_seqlen", 48}};
  auto with = [&](json extra) {
    json o = calib;
    o.update(extra);
    return o;
  };
  recipe_["models"] = {{{"path", "a"},
                        {"outputs",
                         {with({{"name", "q4.gguf"}, {"bits", 4}, {"group_size", 32}, {"calib_float_inputs", true}}),
                          with({{"name", "k.gguf"}, {"type", "Q4_K_M"}, {"calib_float_inputs", true}}),
                          with({{"name", "q8.gguf"}, {"type", "Q8_0"}, {"calib_float_inputs", true}, {"act_order", true}}),
                          with({{"name", "seq.gguf"}, {"type", "Q4_0"}}),
                          with({{"name", "other.gguf"}, {"type", "Q4_0"}, {"calib_float_inputs", true}, {"calib_seed", 3}})}}}};
  const auto r = batch("--json " + (dir_ / "r.json").string());
  ASSERT_EQ(r.code, 0) << r.output;
  const json m = read_json(out() / "quantize-manifest.json");
  const std::map<std::string, std::string> single = {
      {"q4.gguf", "--bits 4 --group-size 32 --calib-float-inputs"},
      {"k.gguf", "--type Q4_K_M --calib-float-inputs"},
      {"q8.gguf", "--type Q8_0 --calib-float-inputs --act-order"},
      {"seq.gguf", "--type Q4_0"},
      {"other.gguf", "--type Q4_0 --calib-float-inputs --calib-seed 3"}};
  for (const auto& [id, options] : single) {
    SCOPED_TRACE(id);
    const json& rec = m["records"][id];
    ASSERT_EQ(rec["status"], "done") << rec.dump(1);
    const bool shares = id == "q4.gguf" || id == "k.gguf" || id == "q8.gguf";
    EXPECT_EQ(rec["report"]["calibration"]["shared_by"], shares ? 3 : 0);
    EXPECT_EQ(rec.contains("calibration_shared_with"), shares);
    if (shares) EXPECT_EQ(rec["calibration_shared_with"].size(), 2u);
    const fs::path alone = dir_ / ("alone-" + id);
    const auto s = run_quantize((dir_ / "a").string() + " -o " + alone.string() + " --method gptq --calib " +
                                (dir_ / "a" / "calib.txt").string() + " --calib-samples 6 --calib-seqlen 48 -t 2 -q " +
                                options);
    ASSERT_EQ(s.code, 0) << s.output;
    EXPECT_EQ(test::read_bytes(alone), test::read_bytes(out() / id));
  }
  const json k = m["records"]["k.gguf"]["calibration_shared_with"];
  EXPECT_EQ(std::set<std::string>(k.begin(), k.end()), (std::set<std::string>{"q4.gguf", "q8.gguf"}));
}

// Outputs that would share a capture of calibration text the model cannot read all fail with the reader's error
// (naming the file), and nothing of them is left behind; the batch's other outputs are still made.
TEST_F(Batch, OutputsSharingACaptureOfUnreadableCalibrationAllFailByNameAndLeaveNothing) {
  { std::ofstream(dir_ / "empty.txt"); }
  const json gptq = {{"method", "gptq"}, {"calib", "empty.txt"}, {"calib_float_inputs", true}};
  json a = gptq, b = gptq;
  a.update({{"name", "a.gguf"}, {"type", "Q4_0"}});
  b.update({{"name", "b.gguf"}, {"type", "Q8_0"}});
  recipe_["models"] = {{{"path", "a"}, {"outputs", {a, b, {{"type", "Q8_0"}}}}}};
  const auto r = batch();
  EXPECT_EQ(r.code, 2) << r.output;
  const json m = read_json(out() / "quantize-manifest.json");
  for (const char* id : {"a.gguf", "b.gguf"}) {
    SCOPED_TRACE(id);
    EXPECT_EQ(m["records"][id]["status"], "error");
    EXPECT_TRUE(contains(m["records"][id]["error"].get<std::string>(), "empty.txt")) << m["records"][id].dump();
    EXPECT_FALSE(fs::exists(out() / id));
  }
  EXPECT_EQ(m["records"]["a-Q8_0.gguf"]["status"], "done");
  for (const auto& e : fs::directory_iterator(out())) EXPECT_FALSE(contains(e.path().string(), ".tmp.")) << e.path();
}

TEST_F(Batch, DryRunSaysWhatWouldBeMadeAndMakesNothing) {
  const auto r = batch("--dry-run --json -");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(fs::exists(out()));
  const json j = json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["counts"]["planned"], 5);
  EXPECT_EQ(j["outputs"][0]["reason"], "not made yet");
}

TEST(BatchRecipe, BadRecipesNameTheKeyAndItsPlace) {
  test::TempDir dir;
  ASSERT_EQ(run_quantize("make-demo " + (dir / "a").string() + " -q").code, 0);
  struct Case {
    json recipe;
    std::vector<std::string> says;
  };
  const json out = {{"type", "Q4_0"}};
  for (const Case& c : std::vector<Case>{
           {{{"models", {{{"path", "a"}, {"outputs", {{{"group_sise", 32}}}}}}}}, {"models[0].outputs[0].group_sise", "unknown setting"}},
           {{{"models", {{{"path", "a"}, {"outputs", {{{"bits", "four"}}}}}}}}, {"models[0].outputs[0]", "--bits"}},
           {{{"models", {{{"path", "a"}, {"outputs", {{{"calib", {{"x", 1}}}}}}}}}}, {"models[0].outputs[0].calib", "expected a string"}},
           {{{"models", {{{"path", "a"}, {"outputs", {out, out}}}}}}, {"models[0].outputs[1]", "a-Q4_0.gguf", "models[0].outputs[0]"}},
           {{{"models", {{{"path", "a"}, {"outputs", {{{"output", "x.gguf"}}}}}}}}, {"models[0].outputs[0].output", "set by the batch"}},
           {{{"models", {{{"outputs", {out}}}}}}, {"models[0].path"}},
           {{{"models", json::array()}}, {"models", "non-empty"}},
           {{{"model", json::array()}}, {"unknown key 'model'"}},
           {{{"defaults", {{"gates", {{"max_kll", 1}}}}}, {"models", {{{"path", "a"}, {"outputs", {out}}}}}}, {"defaults.gates.max_kll", "unknown gate"}},
           {{{"models", {{{"path", "a"}, {"outputs", {{{"max_kl", 0.1}}}}}}}}, {"models[0].outputs[0]", "evaluation text"}}}) {
    SCOPED_TRACE(c.recipe.dump());
    write_json(dir / "r.json", c.recipe);
    const auto r = run_quantize("batch " + (dir / "r.json").string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_TRUE(contains(r.output, "r.json")) << r.output;
    for (const auto& s : c.says) EXPECT_TRUE(contains(r.output, s)) << r.output << "\nmissing: " << s;
  }
  std::ofstream(dir / "bad.json") << "{\"models\": [";
  const auto r = run_quantize("batch " + (dir / "bad.json").string());
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.output, "bad.json: invalid JSON")) << r.output;
}

// The main command's gates: exit 3 with the figures when one fails, the output kept; the JSON report has them.
TEST(QualityGates, TheMainCommandExitsThreeWhenAGateFails) {
  test::TempDir dir;
  const std::string a = (dir / "a").string(), text = (dir / "a" / "calib.txt").string();
  ASSERT_EQ(run_quantize("make-demo " + a + " -q").code, 0);
  const std::string eval = " --eval-text " + text + " --eval-ctx 128 --eval-chunks 8";
  const auto ok = run_quantize(a + " -o " + (dir / "q8.gguf").string() + " --type Q8_0 --max-ppl-increase 0.05 --max-kl 0.01" + eval);
  EXPECT_EQ(ok.code, 0) << ok.output;
  EXPECT_TRUE(contains(ok.output, "quality: ppl")) << ok.output;
  const auto bad = run_quantize(a + " -o " + (dir / "q2.gguf").string() + " --type Q2_K --min-top1 0.999 --json " +
                                (dir / "r.json").string() + eval);
  EXPECT_EQ(bad.code, 3) << bad.output;
  EXPECT_TRUE(contains(bad.output, "quality gate failed: top-1 agreement")) << bad.output;
  EXPECT_TRUE(fs::exists(dir / "q2.gguf"));
  const json j = read_json(dir / "r.json");
  EXPECT_FALSE(j["quality"]["passed"].get<bool>());
  EXPECT_LT(j["quality"]["top1"].get<double>(), 0.999);
  const auto usage = run_quantize(a + " -o " + (dir / "x.gguf").string() + " --max-kl 0.1");
  EXPECT_EQ(usage.code, 2);
  EXPECT_TRUE(contains(usage.output, "evaluation text")) << usage.output;
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
}

}  // namespace
}  // namespace qz
