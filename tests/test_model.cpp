// Architecture tables, tensor names, the q/k permutation, config.json parsing and tokenizers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"
#include "qz/model/architecture.hpp"
#include "qz/model/text_tokenizer.hpp"
#include "qz/model/tokenizer.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json llama_config(const char* arch = "LlamaForCausalLM") {
  return {{"architectures", {arch}}, {"hidden_size", 64},      {"intermediate_size", 172},
          {"num_hidden_layers", 2},  {"num_attention_heads", 8}, {"num_key_value_heads", 4},
          {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-6}, {"rope_theta", 500000.0}, {"vocab_size", 300}};
}

// The value a writer holds under `key`, or null.
const GgufValue* metadata_value(const GgufWriter& w, const std::string& key) {
  for (const auto& kv : w.metadata())
    if (kv.key == key) return &kv.value;
  return nullptr;
}

TEST(Architecture, ConfigBecomesMetadata) {
  const ModelConfig m = parse_model_config(llama_config(), "config.json", "tiny");
  EXPECT_EQ(m.arch->gguf_name, "llama");
  EXPECT_EQ(m.head_dim, 8u);
  EXPECT_EQ(m.head_count_kv, 4u);
  EXPECT_FLOAT_EQ(m.rope_freq_base, 500000.0f);
  GgufWriter w;
  write_architecture_metadata(w, m);
  auto find = [&](const std::string& k) { return metadata_value(w, k); };
  ASSERT_NE(find("llama.block_count"), nullptr);
  EXPECT_EQ(find("llama.block_count")->type(), GgufType::U32);  // llama.cpp checks the value types strictly
  EXPECT_EQ(*find("llama.attention.layer_norm_rms_epsilon")->get_if<float>(), 1e-6f);
  EXPECT_EQ(*find("llama.rope.dimension_count")->get_if<uint32_t>(), 8u);
  EXPECT_EQ(find("llama.rope.scaling.type"), nullptr);

  json scaled = llama_config("MistralForCausalLM");
  scaled["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  const ModelConfig s = parse_model_config(scaled, "config.json", "s");
  EXPECT_EQ(s.arch->gguf_name, "llama");
  EXPECT_EQ(s.rope_scaling_type, "linear");
  EXPECT_FLOAT_EQ(s.rope_scaling_factor, 4.0f);
}

// Llama 3.1's rope scaling, written from Hugging Face's definition (_compute_llama3_parameters) in double: a
// frequency's angle is divided by 1 when its wavelength is under original/high_freq_factor, by `factor` above
// original/low_freq_factor, and by the smoothed factor between. llama.cpp's converter stores these divisors.
TEST(Architecture, Llama3RopeScalingGivesTheFrequencyFactorsAndNoScalingKeys) {
  json c = llama_config();
  c["hidden_size"] = 512;  // head_dim 64: 32 frequencies
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  const ModelConfig m = parse_model_config(c, "config.json", "l3");
  EXPECT_EQ(m.rope_scaling_type, "llama3");
  ASSERT_EQ(m.rope_freq_factors.size(), 32u);
  size_t ones = 0, full = 0, smoothed = 0;
  for (size_t i = 0; i < 32; ++i) {
    const double inv_freq = 1.0 / std::pow(500000.0, 2.0 * static_cast<double>(i) / 64.0);
    const double wavelen = 2.0 * M_PI / inv_freq;
    double scaled = inv_freq;  // HF's new inverse frequency
    if (wavelen > 8192.0 / 1.0) {
      scaled = inv_freq / 8.0;
      ++full;
    } else if (wavelen >= 8192.0 / 4.0) {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      scaled = (1.0 - smooth) * inv_freq / 8.0 + smooth * inv_freq;
      ++smoothed;
    } else {
      ++ones;
    }
    EXPECT_NEAR(m.rope_freq_factors[i], inv_freq / scaled, 1e-5 * inv_freq / scaled) << "frequency " << i;
  }
  EXPECT_GT(ones, 0u);
  EXPECT_GT(full, 0u);
  EXPECT_GT(smoothed, 0u);
  GgufWriter w;
  write_architecture_metadata(w, m);
  for (const auto& kv : w.metadata()) EXPECT_EQ(kv.key.find("rope.scaling"), std::string::npos) << kv.key;
  json bad = c;
  bad["rope_scaling"]["high_freq_factor"] = 0.5;
  test::expect_error<InputError>([&] { parse_model_config(bad, "c.json", "x"); }, {"c.json", "high_freq_factor"});
  bad["rope_scaling"]["high_freq_factor"] = "4";
  test::expect_error<InputError>([&] { parse_model_config(bad, "c.json", "x"); }, {"c.json", "rope_scaling.high_freq_factor"});
}

// YaRN as Qwen2.5 states it: the factor and original context become llama.cpp's rope.scaling keys (the betas only
// when they are not llama.cpp's defaults); what the engine cannot run as llama.cpp does is an error naming the key.
TEST(Architecture, YarnRopeScalingKeysAndErrors) {
  json c = llama_config("Qwen2ForCausalLM");
  c["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  const ModelConfig m = parse_model_config(c, "config.json", "y");
  EXPECT_EQ(m.rope_scaling_type, "yarn");
  EXPECT_EQ(m.rope_original_context, 32768u);
  EXPECT_FLOAT_EQ(m.rope_yarn_beta_fast, 32.0f);
  EXPECT_FLOAT_EQ(m.rope_yarn_beta_slow, 1.0f);
  GgufWriter w;
  write_architecture_metadata(w, m);
  const auto find = metadata_value;
  ASSERT_NE(find(w, "qwen2.rope.scaling.type"), nullptr);
  EXPECT_EQ(*find(w, "qwen2.rope.scaling.type")->get_if<std::string>(), "yarn");
  EXPECT_EQ(*find(w, "qwen2.rope.scaling.factor")->get_if<float>(), 4.0f);
  EXPECT_EQ(*find(w, "qwen2.rope.scaling.original_context_length")->get_if<uint32_t>(), 32768u);
  EXPECT_EQ(find(w, "qwen2.rope.scaling.yarn_beta_fast"), nullptr);
  c["rope_scaling"]["beta_fast"] = 16.0;
  GgufWriter w2;
  write_architecture_metadata(w2, parse_model_config(c, "config.json", "y"));
  ASSERT_NE(find(w2, "qwen2.rope.scaling.yarn_beta_fast"), nullptr);
  EXPECT_EQ(*find(w2, "qwen2.rope.scaling.yarn_beta_fast")->get_if<float>(), 16.0f);
  json bad = c;
  bad["rope_scaling"]["beta_fast"] = 0.5;
  test::expect_error<InputError>([&] { parse_model_config(bad, "c.json", "x"); }, {"c.json", "beta_fast > beta_slow"});
  bad = c;
  bad["rope_scaling"]["attention_factor"] = 1.2;
  test::expect_error<InputError>([&] { parse_model_config(bad, "c.json", "x"); }, {"c.json", "rope_scaling.attention_factor"});
  bad = c;
  bad["rope_scaling"]["beta_slow"] = "1";
  test::expect_error<InputError>([&] { parse_model_config(bad, "c.json", "x"); }, {"c.json", "rope_scaling.beta_slow"});
}

TEST(Architecture, BadConfigsAreClearErrors) {
  test::expect_error<InputError>([] { parse_model_config(llama_config("GPTNeoXForCausalLM"), "c.json", "x"); },
                                 {"c.json", "GPTNeoXForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                  "Qwen3ForCausalLM"});
  json no_layers = llama_config();
  no_layers.erase("num_hidden_layers");
  test::expect_error<InputError>([&] { parse_model_config(no_layers, "c.json", "x"); }, {"c.json", "num_hidden_layers"});
  json bad_heads = llama_config();
  bad_heads["num_key_value_heads"] = 3;
  test::expect_error<InputError>([&] { parse_model_config(bad_heads, "c.json", "x"); }, {"not a multiple"});
}

TEST(Architecture, TensorNames) {
  const ModelConfig m = parse_model_config(llama_config(), "config.json", "tiny");
  EXPECT_EQ(*gguf_tensor_name(m, "model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "lm_head.weight"), "output.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "model.norm.weight"), "output_norm.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "model.layers.1.self_attn.q_proj.weight"), "blk.1.attn_q.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "model.layers.0.self_attn.o_proj.weight"), "blk.0.attn_output.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "model.layers.0.post_attention_layernorm.weight"), "blk.0.ffn_norm.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "model.layers.0.self_attn.k_proj.bias"), "blk.0.attn_k.bias");
  EXPECT_FALSE(gguf_tensor_name(m, "model.layers.0.self_attn.rotary_emb.inv_freq"));
  EXPECT_THROW(gguf_tensor_name(m, "model.layers.0.mlp.experts.0.w1.weight"), InputError);
}

TEST(Architecture, QueryKeyPermutationFollowsLlamaCppsConverter) {
  const ModelConfig m = parse_model_config(llama_config(), "config.json", "tiny");
  // 8 heads of 8: within a head, new row 2i + j takes old row j * 4 + i (llama.cpp's LlamaModel.permute).
  const auto q = gguf_row_order(m, "model.layers.0.self_attn.q_proj.weight", 64);
  ASSERT_EQ(q.size(), 64u);
  EXPECT_EQ((std::vector<uint32_t>(q.begin(), q.begin() + 8)), (std::vector<uint32_t>{0, 4, 1, 5, 2, 6, 3, 7}));
  EXPECT_EQ(q[8], 8u);
  EXPECT_EQ(q[9], 12u);
  // k uses the KV heads: 4 heads of 8 over 32 rows.
  const auto k = gguf_row_order(m, "model.layers.0.self_attn.k_proj.weight", 32);
  EXPECT_EQ(k[1], 4u);
  EXPECT_TRUE(gguf_row_order(m, "model.layers.0.self_attn.v_proj.weight", 32).empty());
  // Qwen2 uses NEOX RoPE: no permutation.
  const ModelConfig qwen = parse_model_config(llama_config("Qwen2ForCausalLM"), "config.json", "q");
  EXPECT_TRUE(gguf_row_order(qwen, "model.layers.0.self_attn.q_proj.weight", 64).empty());
  EXPECT_TRUE(qwen.arch->requires_qkv_bias);
}

// Qwen3 (llama.cpp's conversion/qwen.py Qwen3Model, src/models/qwen3.cpp): arch qwen3, head_dim stated apart from
// hidden / heads (key_length, value_length), per-head Q/K norms named attn_q_norm / attn_k_norm, NEOX RoPE (no
// permutation), no required biases; the Q/K norm names are refused for an architecture without them.
TEST(Architecture, Qwen3ConfigNamesAndMetadata) {
  json c = llama_config("Qwen3ForCausalLM");
  c["head_dim"] = 16;  // 8 heads x 16 = 128, not hidden_size 64 (as Qwen3-0.6B: 16 x 128 against 1024)
  const ModelConfig m = parse_model_config(c, "config.json", "q3");
  EXPECT_EQ(m.arch->gguf_name, "qwen3");
  EXPECT_EQ(m.head_dim, 16u);
  EXPECT_TRUE(m.arch->qk_norm);
  EXPECT_FALSE(m.arch->requires_qkv_bias);
  EXPECT_TRUE(gguf_row_order(m, "model.layers.0.self_attn.q_proj.weight", 128).empty());
  EXPECT_EQ(*gguf_tensor_name(m, "model.layers.1.self_attn.q_norm.weight"), "blk.1.attn_q_norm.weight");
  EXPECT_EQ(*gguf_tensor_name(m, "model.layers.0.self_attn.k_norm.weight"), "blk.0.attn_k_norm.weight");
  const ModelConfig llama = parse_model_config(llama_config(), "config.json", "l");
  EXPECT_THROW(gguf_tensor_name(llama, "model.layers.0.self_attn.q_norm.weight"), InputError);
  GgufWriter w;
  write_architecture_metadata(w, m);
  auto find = [&](const std::string& k) { return metadata_value(w, k); };
  ASSERT_NE(find("qwen3.attention.key_length"), nullptr);
  EXPECT_EQ(*find("qwen3.attention.key_length")->get_if<uint32_t>(), 16u);
  EXPECT_EQ(*find("qwen3.attention.value_length")->get_if<uint32_t>(), 16u);
  EXPECT_EQ(*find("qwen3.rope.dimension_count")->get_if<uint32_t>(), 16u);
  EXPECT_EQ(*find("qwen3.embedding_length")->get_if<uint32_t>(), 64u);
  // A sliding-window Qwen model would not run as trained in llama.cpp (full attention everywhere): the key is named.
  c["use_sliding_window"] = true;
  test::expect_error<InputError>([&] { parse_model_config(c, "c.json", "x"); }, {"c.json", "use_sliding_window", "qwen3"});
  c["use_sliding_window"] = false;
  EXPECT_NO_THROW(parse_model_config(c, "c.json", "x"));
}

TEST(Tokenizer, SentencePieceRoundTripAndSpecialTokens) {
  test::TempDir dir;
  std::vector<SentencePiece> pieces = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"<0x0A>", 0, 6},
                                       {"\xe2\x96\x81hello", -1.5f, 1}, {"<pad>", 0, 4}};
  write_sentencepiece(dir / "tokenizer.model", pieces);
  const auto back = read_sentencepiece(dir / "tokenizer.model");
  ASSERT_EQ(back.size(), pieces.size());
  EXPECT_EQ(back[4].piece, "\xe2\x96\x81hello");
  EXPECT_EQ(back[4].score, -1.5f);
  EXPECT_EQ(back[3].type, 6);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"add_bos_token": true, "add_eos_token": false, "pad_token": "<pad>", "chat_template": "{{ x }}"})";
  std::ofstream(dir / "generation_config.json") << R"({"bos_token_id": 1, "eos_token_id": [2, 3]})";
  const auto v = read_vocabulary(dir.path(), "llama", 8);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->model, "llama");
  ASSERT_EQ(v->tokens.size(), 8u);  // padded to the config's vocab size
  EXPECT_EQ(v->tokens[7], "[PAD7]");
  EXPECT_EQ(v->types[7], 5);
  EXPECT_EQ(v->bos, 1u);
  EXPECT_EQ(v->eos, 2u);
  EXPECT_EQ(v->pad, 5u);
  EXPECT_EQ(v->add_bos, true);
  EXPECT_EQ(v->chat_template, "{{ x }}");
}

TEST(Tokenizer, MalformedSentencePieceIsAnError) {
  test::TempDir dir;
  test::write_bytes(dir / "tokenizer.model", {0x0A, 0x50, 0x01});  // a piece of 80 bytes in a 3-byte file
  test::expect_error<InputError>([&] { read_sentencepiece(dir / "tokenizer.model"); },
                                 {"tokenizer.model", "malformed SentencePiece"});
}

// tokenizer.json ids are checked (issue 16, defects 1, 2 and 5): negative, huge or non-integer ids, and missing or
// mistyped keys, are errors naming the file, never a crash or an allocation of the id's size.
TEST(Tokenizer, MalformedTokenizerJsonIdsAndKeysAreErrorsNamingTheFile) {
  const json good = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", {"a b"}}}}};
  struct Case {
    std::function<void(json&)> edit;
    std::vector<std::string> says;
  };
  for (const Case& c : std::vector<Case>{
           {[](json& j) { j["model"]["vocab"]["b"] = -1; }, {"tokenizer.json", "model.vocab[\"b\"]", "-1"}},
           {[](json& j) { j["model"]["vocab"]["b"] = 100000000000LL; }, {"tokenizer.json", "100000000000"}},
           {[](json& j) { j["model"]["vocab"]["b"] = "1"; }, {"tokenizer.json", "\"1\""}},
           {[](json& j) { j["added_tokens"] = {{{"id", -1}, {"content", "<s>"}}}; }, {"tokenizer.json", "added_tokens"}},
           {[](json& j) { j["added_tokens"] = {{{"id", 2}}}; }, {"tokenizer.json", "added_tokens"}},
           {[](json& j) { j["model"].erase("merges"); }, {"tokenizer.json", "model.merges"}},
           {[](json& j) { j["model"]["merges"] = {{1, 2}}; }, {"tokenizer"}}}) {
    test::TempDir dir;
    json tok = good;
    c.edit(tok);
    std::ofstream(dir / "tokenizer.json") << tok.dump();
    SCOPED_TRACE(tok.dump());
    test::expect_error<InputError>([&] { read_vocabulary(dir.path(), "llama", 0); }, c.says);
    test::expect_error<InputError>([&] { make_bpe_tokenizer(dir / "tokenizer.json"); }, {"tokenizer.json"});
  }
}

TEST(Tokenizer, ByteLevelBpeFromTokenizerJson) {
  test::TempDir dir;
  const json tok = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}},
      {"added_tokens", {{{"id", 3}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}"}}}}},
  };
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|endoftext|>", "add_bos_token": false})";
  const auto v = read_vocabulary(dir.path(), "llama", 0);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->model, "gpt2");
  EXPECT_EQ(v->pre, "llama-bpe");
  EXPECT_EQ(v->tokens, (std::vector<std::string>{"a", "b", "ab", "<|endoftext|>"}));
  EXPECT_EQ(v->types, (std::vector<int32_t>{1, 1, 1, 3}));
  EXPECT_EQ(v->merges, std::vector<std::string>{"a b"});
  EXPECT_EQ(v->eos, 3u);
  EXPECT_EQ(v->add_bos, false);
  EXPECT_FALSE(read_vocabulary(dir / "nowhere", "llama", 0));
}

}  // namespace
}  // namespace qz

#include "qz/model/model_card.hpp"

namespace qz {
namespace {

TEST(ModelCard, FrontMatterFieldsAsTheConverterReadsThem) {
  const std::string readme =
      "---\n"
      "license: llama2\n"
      "language:\n"
      "- en\n"
      "- \"fr\"\n"
      "tags: [facebook, meta, llama-2]\n"
      "base_model: meta-llama/Llama-2-7b-hf\n"
      "datasets:\n"
      "  - tatsu-lab/alpaca\n"
      "widget:\n"
      "  text: ignored\n"
      "---\n"
      "# Model card\n";
  const auto card = parse_model_card(readme);
  ASSERT_TRUE(card);
  EXPECT_EQ(card->license, "llama2");
  EXPECT_EQ(card->languages, (std::vector<std::string>{"en", "fr"}));
  EXPECT_EQ(card->tags, (std::vector<std::string>{"facebook", "meta", "llama-2"}));
  ASSERT_EQ(card->base_models.size(), 1u);
  EXPECT_EQ(card->base_models[0].name, "Llama 2 7b Hf");
  EXPECT_EQ(card->base_models[0].organization, "Meta Llama");
  EXPECT_EQ(card->base_models[0].repo_url, "https://huggingface.co/meta-llama/Llama-2-7b-hf");
  ASSERT_EQ(card->datasets.size(), 1u);
  EXPECT_EQ(card->datasets[0].name, "Alpaca");
  EXPECT_EQ(card->datasets[0].organization, "Tatsu Lab");
  EXPECT_FALSE(parse_model_card("# no front matter\n"));
  EXPECT_FALSE(parse_model_card("---\nlicense: mit\n"));  // never closed
}

TEST(ModelCard, TitlesAndSizeLabels) {
  // id_to_title keeps versions, words starting with a digit and words with capitals as they are.
  EXPECT_EQ(hub_title("mistral-7b-instruct-v0.2"), "Mistral 7b Instruct v0.2");
  EXPECT_EQ(hub_title("Qwen2.5-0.5B"), "Qwen2.5 0.5B");
  // size_label: at least two significant digits, K/M/B/T by magnitude.
  EXPECT_EQ(size_label(15'000'000), "15M");
  EXPECT_EQ(size_label(4'500'000), "4.5M");
  EXPECT_EQ(size_label(1'800'000), "1.8M");
  EXPECT_EQ(size_label(260'000), "260K");
  EXPECT_EQ(size_label(8'030'000'000), "8.0B");
  EXPECT_EQ(size_label(70'600'000'000), "71B");
}

}  // namespace
}  // namespace qz
