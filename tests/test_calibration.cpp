// Calibration from text: the kinds of --calib files, the window draw, and the block-by-block pass. Truths: counting
// on hand-made streams; the plain float64 reference forward pass (tests/reference_forward.hpp) run on the model with
// exactly the blocks and groups the pass has replaced (an elementwise rounding, which commutes with llama.cpp's q/k
// row permutation, so the reference applies it in Hugging Face's layout); llama-imatrix's definition (sum of x^2 per
// column over every token of every chunk) on the reference's activations.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "qz/calibration/block_by_block.hpp"
#include "qz/calibration/calibration_text.hpp"
#include "qz/calibration/engine_statistics.hpp"
#include "qz/calibration/shared_hessians.hpp"
#include "qz/methods/awq.hpp"
#include "qz/core/error.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/model/text_tokenizer.hpp"
#include "reference_forward.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

TEST(CalibrationKind, IsDecidedByTheFile) {
  test::TempDir dir;
  write(dir / "a.txt", "hello");
  write(dir / "b.jsonl", "{\"text\": \"a\"}\n");
  write(dir / "c.json", "[\"one\", \"two\"]");
  write(dir / "d.json", "[[1, 2, 3], [4]]");
  write(dir / "e.json", "[3]");
  write(dir / "f.json", "{\"a\": 1}");
  EXPECT_EQ(calibration_kind(dir / "x.safetensors"), CalibKind::Activations);
  EXPECT_EQ(calibration_kind(dir / "a.txt"), CalibKind::Text);
  EXPECT_EQ(calibration_kind(dir / "b.jsonl"), CalibKind::JsonLines);
  EXPECT_EQ(calibration_kind(dir / "c.json"), CalibKind::JsonStrings);
  EXPECT_EQ(calibration_kind(dir / "d.json"), CalibKind::JsonTokens);
  EXPECT_THROW(calibration_kind(dir / "e.json"), InputError);
  EXPECT_THROW(calibration_kind(dir / "f.json"), InputError);
  EXPECT_THROW(calibration_kind(dir / "g.bin"), UsageError);
}

TEST(CalibrationDocuments, TokenListsDropALeadingBosAndAreCheckedAgainstTheVocabulary) {
  test::TempDir dir;
  write(dir / "d.json", "[[1, 5, 6], [7, 8]]");
  const auto docs = read_calibration_documents(dir / "d.json", nullptr, 1, 512);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(docs[1], (std::vector<int32_t>{7, 8}));
  write(dir / "bad.json", "[[1, 5], [600]]");
  try {
    read_calibration_documents(dir / "bad.json", nullptr, 1, 512);
    FAIL() << "an id outside the vocabulary was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("element 1, token 0"), std::string::npos) << e.what();
  }
  write(dir / "bad.jsonl", "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n");
  write(dir / "empty.json", "[[]]");
  EXPECT_THROW(read_calibration_documents(dir / "empty.json", nullptr, 1, 512), InputError);
  write(dir / "mixed.json", "[[1, 2], \"text\"]");
  EXPECT_THROW(read_calibration_documents(dir / "mixed.json", nullptr, 1, 512), InputError);
}

TEST(CalibrationDocuments, TextKindsAreEncodedByTheModelsTokenizerOnePerDocument) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const auto tok = open_text_tokenizer(dir / "demo");
  write(dir / "a.jsonl", "{\"text\": \"the cat\"}\n\n{\"text\": \"a dog\"}\n");
  write(dir / "b.json", "[\"the cat\", \"a dog\"]");
  write(dir / "c.txt", "the cat\n");
  const auto a = read_calibration_documents(dir / "a.jsonl", tok.get(), tok->bos, 0);
  const auto b = read_calibration_documents(dir / "b.json", tok.get(), tok->bos, 0);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a[0], tok->encode("the cat"));
  EXPECT_EQ(a[1], tok->encode("a dog"));
  EXPECT_EQ(read_calibration_documents(dir / "c.txt", tok.get(), tok->bos, 0), std::vector<std::vector<int32_t>>{tok->encode("the cat")});
  write(dir / "bad.jsonl", "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n");
  try {
    read_calibration_documents(dir / "bad.jsonl", tok.get(), tok->bos, 0);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
}

TEST(CalibrationSamples, DisjointWindowsWithBosFirstTheSameForTheSameSeed) {
  std::vector<std::vector<int32_t>> docs = {{}, {}};
  for (int32_t i = 0; i < 1000; ++i) docs[i % 2 ? 1 : 0].push_back(10 + i);  // 1000 distinct ids over two documents
  CalibSampling how;
  how.samples = 7;
  how.seqlen = 33;
  const CalibSamples s = draw_calibration_samples(docs, 1, how);
  ASSERT_EQ(s.sequences.size(), 7u);
  EXPECT_TRUE(s.warning.empty());
  EXPECT_EQ(s.stream_tokens, 1000u);
  std::set<int32_t> seen;
  std::vector<int32_t> stream = docs[0];
  stream.insert(stream.end(), docs[1].begin(), docs[1].end());
  for (const auto& w : s.sequences) {
    ASSERT_EQ(w.size(), 33u);
    EXPECT_EQ(w[0], 1);
    // A window is 32 consecutive tokens of the stream, starting at a multiple of 32.
    const auto at = std::find(stream.begin(), stream.end(), w[1]) - stream.begin();
    EXPECT_EQ(at % 32, 0);
    for (size_t i = 1; i < w.size(); ++i) {
      EXPECT_EQ(w[i], stream[static_cast<size_t>(at) + i - 1]);
      EXPECT_TRUE(seen.insert(w[i]).second) << "a token in two windows";
    }
  }
  EXPECT_EQ(draw_calibration_samples(docs, 1, how).sequences, s.sequences);
  how.seed = 1;
  EXPECT_NE(draw_calibration_samples(docs, 1, how).sequences, s.sequences);
}

TEST(CalibrationSamples, FewerTokensThanAskedUsesThemAllAndSaysSo) {
  const std::vector<std::vector<int32_t>> docs = {test::some_tokens(100, 1, 500)};
  CalibSampling how;
  how.samples = 8;
  how.seqlen = 41;
  const CalibSamples s = draw_calibration_samples(docs, 1, how);
  ASSERT_EQ(s.sequences.size(), 3u);  // 40 + 40 + 20
  EXPECT_EQ(s.sequences[2].size(), 21u);
  EXPECT_EQ(s.tokens(), 103u);
  EXPECT_NE(s.warning.find("using 3 windows, 103 tokens"), std::string::npos) << s.warning;
  EXPECT_THROW(draw_calibration_samples({{}}, 1, how), InputError);
}

// The group of a Hugging Face module name of block `l`: 0 q/k/v, 1 o, 2 gate/up, 3 down; -1 not a block linear.
int group_of(const std::string& hf, uint32_t* block) {
  unsigned l = 0;
  char rest[64] = {};
  if (std::sscanf(hf.c_str(), "model.layers.%u.%63s", &l, rest) != 2) return -1;
  *block = l;
  const std::string r = rest;
  if (r.starts_with("self_attn.q_proj.weight") || r.starts_with("self_attn.k_proj.weight") || r.starts_with("self_attn.v_proj.weight")) return 0;
  if (r.starts_with("self_attn.o_proj.weight")) return 1;
  if (r.starts_with("mlp.gate_proj.weight") || r.starts_with("mlp.up_proj.weight")) return 2;
  if (r.starts_with("mlp.down_proj.weight")) return 3;
  return -1;
}

double coarse(double v) { return std::round(v * 8.0) / 8.0; }

// Records every input it is shown and replaces each group by its weights rounded to multiples of 1/8.
struct Recorder final : BlockObserver {
  const ModelWeights* model;
  std::map<std::pair<uint32_t, int>, std::vector<float>> inputs;
  size_t columns = 0;
  void observe(const LinearGroup& g, const float* x, size_t tokens, size_t cols) override {
    auto& v = inputs[{g.block, static_cast<int>(g.input)}];
    v.insert(v.end(), x, x + tokens * cols);
  }
  std::vector<std::pair<std::string, FloatTensor>> finish(const LinearGroup& g) override {
    std::vector<std::pair<std::string, FloatTensor>> out;
    for (const auto& n : g.weights) {
      FloatTensor t = model->get(n);
      for (float& v : t.values) v = static_cast<float>(coarse(v));
      out.emplace_back(n, std::move(t));
    }
    return out;
  }
};

const char* kInputModule[] = {"self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"};

class BlockByBlockPass : public ::testing::TestWithParam<std::string> {};

TEST_P(BlockByBlockPass, EachGroupSeesTheInputsOfTheModelWithEveryEarlierGroupReplaced) {
  test::TempDir dir;
  DemoConfig c;
  c.architecture = GetParam();
  if (c.architecture == "Qwen3ForCausalLM") c.head_dim = 128;
  write_demo_checkpoint(dir / "demo", c);
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  const auto weights = ModelWeights::open(dir / "demo");
  const std::vector<std::vector<int32_t>> windows = {test::some_tokens(9, 1, 512), test::some_tokens(6, 2, 512), test::some_tokens(11, 3, 512)};
  for (const bool float_inputs : {false, true}) {
    Recorder rec;
    rec.model = weights.get();
    BlockByBlockOptions o;
    o.threads = 2;
    o.batch_tokens = 16;  // three batches of whole windows: 9, 6, 11
    o.float_inputs = float_inputs;
    BlockByBlock pass(*weights, windows, o);
    EXPECT_EQ(pass.tokens(), 26u);
    while (pass.next_block() < pass.block_count()) pass.run_next_block(rec);
    for (uint32_t l = 0; l < m.block_count; ++l)
      for (int g = 0; g < 4; ++g) {
        // The reference model: every group before (l, g) rounded, unless the inputs are the float model's.
        const auto weight = [&](const std::string& name) {
          test::Mat w = test::checkpoint_weight(ck, name);
          uint32_t b = 0;
          const int wg = group_of(name, &b);
          if (!float_inputs && wg >= 0 && (b < l || (b == l && wg < g))) w = w.unaryExpr(&coarse);
          return w;
        };
        std::vector<float> want;
        const std::string module = fmt::format("model.layers.{}.{}", l, kInputModule[g]);
        for (const auto& s : windows)
          test::reference_logits(weight, m, std::vector<int>(s.begin(), s.end()), ck.find("lm_head.weight") != nullptr,
                                 [&](const std::string& mod, const test::Vec& x) {
                                   if (mod == module)
                                     for (Eigen::Index i = 0; i < x.size(); ++i) want.push_back(static_cast<float>(x[i]));
                                 });
        const auto& got = rec.inputs.at({l, g});
        ASSERT_EQ(got.size(), want.size()) << module;
        double num = 0, den = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          num += (got[i] - want[i]) * (got[i] - want[i]);
          den += want[i] * want[i];
        }
        EXPECT_LT(std::sqrt(num / den), 2e-5) << module << (float_inputs ? " (float inputs)" : "");
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, BlockByBlockPass,
                         ::testing::Values("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"));

TEST(BlockByBlockPass, Bf16StatesStayCloseAndTheStatisticsDoNotDependOnTheThreadCount) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const auto weights = ModelWeights::open(dir / "demo");
  const std::vector<std::vector<int32_t>> windows = {test::some_tokens(30, 1, 512), test::some_tokens(20, 2, 512)};
  auto run = [&](unsigned threads, bool bf16) {
    Recorder rec;
    rec.model = weights.get();
    BlockByBlockOptions o;
    o.threads = threads;
    o.bf16_states = bf16;
    BlockByBlock pass(*weights, windows, o);
    while (pass.next_block() < pass.block_count()) pass.run_next_block(rec);
    return rec.inputs;
  };
  const auto one = run(1, false);
  EXPECT_EQ(run(2, false), one);
  const auto half = run(2, true);
  const auto last = one.rbegin()->first;  // down_proj's input of the last block
  const auto& a = one.at(last);
  const auto& b = half.at(last);
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += a[i] * a[i];
  }
  EXPECT_GT(num, 0.0);                    // the states really were rounded
  EXPECT_LT(std::sqrt(num / den), 2e-2);  // bf16 keeps 8 bits of mantissa
}

// Several consumers in their own threads share one float-input pass: every group's Hessian is 2/N X^T X of the
// inputs the float model shows (recorded by an independent pass), each block runs once, at most two blocks' Hessians
// are held however far apart the consumers are, and a consumer that leaves early is not waited for.
TEST(SharedHessians, ConsumersInThreadsShareOnePassOfTheFloatModel) {
  test::TempDir dir;
  DemoConfig c;
  c.layers = 4;
  write_demo_checkpoint(dir / "demo", c);
  const auto weights = ModelWeights::open(dir / "demo");
  const std::vector<std::vector<int32_t>> windows = {test::some_tokens(9, 1, 512), test::some_tokens(6, 2, 512), test::some_tokens(11, 3, 512)};
  BlockByBlockOptions o;
  o.threads = 2;
  o.batch_tokens = 16;
  // The reference: the float model's inputs of every group, and their Hessians in double.
  Recorder rec;
  rec.model = weights.get();
  {
    BlockByBlockOptions f = o;
    f.float_inputs = true;
    BlockByBlock pass(*weights, windows, f);
    while (pass.next_block() < pass.block_count()) pass.run_next_block(rec);
  }
  SharedHessians shared(*weights, windows, o, 3);
  ASSERT_EQ(shared.block_count(), 4u);
  EXPECT_EQ(shared.tokens(), 26u);
  std::vector<std::map<std::pair<uint32_t, int>, std::shared_ptr<const GroupHessian>>> got(3);
  std::vector<std::thread> threads;
  for (size_t consumer = 0; consumer < 3; ++consumer)
    threads.emplace_back([&, consumer] {
      const uint32_t blocks = consumer == 2 ? 1 : shared.block_count();  // the third leaves after block 0
      for (uint32_t l = 0; l < blocks; ++l) {
        for (int g = 0; g < 4; ++g) got[consumer][{l, g}] = shared.get(consumer, l, static_cast<BlockInput>(g));
        if (consumer == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // one slower consumer
      }
      shared.leave(consumer);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(shared.blocks_run(), 4u);
  EXPECT_GE(shared.most_blocks_held(), 1u);
  EXPECT_LE(shared.most_blocks_held(), 2u);
  EXPECT_EQ(got[2].size(), 4u);
  for (const auto& [key, h] : got[0]) {
    SCOPED_TRACE(fmt::format("block {} group {}", key.first, key.second));
    EXPECT_EQ(got[1].at(key), h);  // the same capture, not a second one
    const std::vector<float>& x = rec.inputs.at(key);
    const Eigen::Index cols = h->hessian.cols();
    ASSERT_EQ(static_cast<size_t>(cols) * 26, x.size());
    EXPECT_EQ(h->tokens, 26u);
    Eigen::MatrixXd X(26, cols);
    for (Eigen::Index t = 0; t < 26; ++t)
      for (Eigen::Index j = 0; j < cols; ++j) X(t, j) = x[static_cast<size_t>(t * cols + j)];
    const Eigen::MatrixXd want = 2.0 / 26.0 * X.transpose() * X;
    EXPECT_LT((h->hessian - want).norm() / want.norm(), 1e-6);
  }
  EXPECT_THROW(shared.get(0, 0, BlockInput::AttnQkv), std::logic_error);  // a consumer that has left
}

TEST(SharedHessians, AskingOutOfBlockOrderIsAProgrammingError) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const auto weights = ModelWeights::open(dir / "demo");
  SharedHessians shared(*weights, {test::some_tokens(9, 1, 512)}, {}, 2);
  ASSERT_GE(shared.block_count(), 2u);
  shared.get(0, 1, BlockInput::FfnDown);  // the pass runs blocks 0 and 1
  EXPECT_THROW(shared.get(0, 0, BlockInput::AttnQkv), std::logic_error);
  shared.get(1, 0, BlockInput::AttnQkv);  // the other consumer still has block 0
  shared.leave(0);
  shared.leave(1);
}

TEST(ImatrixFromText, ChunksAsLlamaImatrixAndSumsSquaredInputsOfEveryToken) {
  const std::vector<int32_t> stream = test::some_tokens(50, 4, 512);
  EXPECT_THROW(imatrix_chunks(stream, 26, 0, 1), InputError);  // fewer than 2 x ctx
  const auto chunks = imatrix_chunks(stream, 16, 0, 1);
  ASSERT_EQ(chunks.size(), 3u);  // 50 / 16, the tail dropped
  EXPECT_EQ(chunks[1][0], 1);
  EXPECT_TRUE(std::equal(chunks[1].begin() + 1, chunks[1].end(), stream.begin() + 17));
  EXPECT_EQ(imatrix_chunks(stream, 16, 2, 1).size(), 2u);

  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  const auto weights = ModelWeights::open(dir / "demo");
  const Imatrix im = imatrix_from_windows(*weights, chunks, 2);
  EXPECT_EQ(im.chunk_count, 3u);
  EXPECT_EQ(im.chunk_size, 16u);
  EXPECT_EQ(im.tensors.size(), 7u * m.block_count);
  std::map<std::string, std::vector<double>> want;
  for (const auto& s : chunks)
    test::reference_logits(ck, m, std::vector<int>(s.begin(), s.end()), [&](const std::string& mod, const test::Vec& x) {
      auto& w = want[mod];
      w.resize(static_cast<size_t>(x.size()));
      for (Eigen::Index i = 0; i < x.size(); ++i) w[static_cast<size_t>(i)] += x[i] * x[i];
    });
  const std::pair<const char*, const char*> names[] = {{"attn_q", "self_attn.q_proj"}, {"attn_v", "self_attn.q_proj"},
                                                       {"attn_output", "self_attn.o_proj"}, {"ffn_up", "mlp.gate_proj"},
                                                       {"ffn_down", "mlp.down_proj"}};
  for (uint32_t l = 0; l < m.block_count; ++l)
    for (const auto& [gguf, hf] : names) {
      const ImatrixTensor& t = im.tensors.at(fmt::format("blk.{}.{}.weight", l, gguf));
      EXPECT_EQ(t.counts, std::vector<float>{48.0f});
      const auto& w = want.at(fmt::format("model.layers.{}.{}", l, hf));
      ASSERT_EQ(t.sum2.size(), w.size());
      for (size_t j = 0; j < w.size(); ++j) EXPECT_NEAR(t.sum2[j], w[j], 1e-4 * w[j] + 1e-6) << gguf << " column " << j;
    }
}

// AWQ's module objective: the error of the attention output (q/k/v replaced) or of the MLP output (gate/up
// replaced) against the float model's, on the first windows; zero for the float weights, and equal to the same
// error through the reference forward pass (o_proj's and down_proj's inputs captured, times their float weights).
TEST(EngineAwqActivations, ModuleLossIsTheAttentionOrMlpOutputErrorOfTheReferenceForwardPass) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  const ModelConfig m = parse_model_config(*ck.config(), "config.json", "demo");
  const auto weights = ModelWeights::open(dir / "demo");
  const std::vector<std::vector<int32_t>> windows = {test::some_tokens(12, 1, 512), test::some_tokens(9, 2, 512), test::some_tokens(30, 3, 512)};
  EngineAwqActivations acts(*weights, windows, 20, 2);  // the first two windows hold 21 >= 20 tokens
  EXPECT_EQ(acts.module_tokens(), 21u);
  const uint32_t l = m.block_count - 1;  // a block whose inputs come from the float blocks before it
  const std::string p = fmt::format("blk.{}.", l);
  EXPECT_FALSE(acts.module_loss(l, BlockInput::AttnOutput, {p + "attn_output.weight"}));
  struct Case {
    BlockInput input;
    std::vector<std::string> gguf, hf;
    const char* captured;  // the module's last linear's input, in the reference
    const char* last;      // that linear (kept float)
  };
  const std::string hp = fmt::format("model.layers.{}.", l);
  for (const Case& c : {Case{BlockInput::AttnQkv, {p + "attn_v.weight", p + "attn_q.weight", p + "attn_k.weight"},
                             {"self_attn.v_proj.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight"},
                             "self_attn.o_proj", "self_attn.o_proj.weight"},
                        Case{BlockInput::FfnGateUp, {p + "ffn_up.weight", p + "ffn_gate.weight"},
                             {"mlp.up_proj.weight", "mlp.gate_proj.weight"}, "mlp.down_proj", "mlp.down_proj.weight"}}) {
    SCOPED_TRACE(c.captured);
    const AwqModuleLoss loss = acts.module_loss(l, c.input, c.gguf);
    ASSERT_TRUE(loss);
    std::vector<std::vector<float>> exact, rounded;
    for (const auto& n : c.gguf) {
      exact.push_back(weights->get(n).values);
      rounded.push_back(exact.back());
      for (float& v : rounded.back()) v = static_cast<float>(coarse(v));
    }
    EXPECT_EQ(loss(exact), 0.0);
    // The reference: module outputs with the group's weights rounded, against the float ones.
    auto outputs = [&](bool round) {
      std::vector<double> y;
      const test::Mat last = test::checkpoint_weight(ck, hp + c.last);
      const auto weight = [&](const std::string& name) {
        test::Mat w = test::checkpoint_weight(ck, name);
        for (const auto& h : c.hf)
          if (round && name == hp + h) w = w.unaryExpr(&coarse);
        return w;
      };
      for (size_t s = 0; s < 2; ++s)
        test::reference_logits(weight, m, std::vector<int>(windows[s].begin(), windows[s].end()),
                               ck.find("lm_head.weight") != nullptr, [&](const std::string& mod, const test::Vec& x) {
                                 if (mod != hp + c.captured) return;
                                 const test::Vec o = last * x;
                                 y.insert(y.end(), o.data(), o.data() + o.size());
                               });
      return y;
    };
    const auto a = outputs(false), b = outputs(true);
    double mse = 0;
    for (size_t i = 0; i < a.size(); ++i) mse += (a[i] - b[i]) * (a[i] - b[i]);
    mse /= static_cast<double>(a.size());
    EXPECT_GT(mse, 0.0);
    EXPECT_NEAR(loss(rounded), mse, 1e-3 * mse);
  }
}

}  // namespace
}  // namespace qz
