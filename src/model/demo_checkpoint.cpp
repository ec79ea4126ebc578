#include "qz/model/demo_checkpoint.hpp"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/core/random.hpp"
#include "qz/model/byte_level.hpp"
#include "qz/io/safetensors.hpp"
#include "qz/model/tokenizer.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

// A SentencePiece vocabulary of `size` pieces shaped like LLaMA's: <unk>, <s>, </s>, the 256 byte tokens, then
// letters, word-initial letters ("\u2581a"), digits, punctuation and letter pairs.
void write_demo_tokenizer(const fs::path& dir, int size) {
  std::vector<SentencePiece> pieces = {{"<unk>", 0.0f, 2}, {"<s>", 0.0f, 3}, {"</s>", 0.0f, 3}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back({name, 0.0f, 6});
  }
  std::vector<std::string> words;
  const std::string space = "\xe2\x96\x81";  // U+2581, SentencePiece's word-boundary mark
  for (char ch = 'a'; ch <= 'z'; ++ch) words.push_back(space + ch);
  for (char ch = 'a'; ch <= 'z'; ++ch) words.emplace_back(1, ch);
  for (char ch = 'A'; ch <= 'Z'; ++ch) words.emplace_back(1, ch);
  for (char ch = '0'; ch <= '9'; ++ch) words.emplace_back(1, ch);
  for (const char* p : {".", ",", "!", "?", "'", space.c_str()}) words.emplace_back(p);
  for (char x = 'a'; x <= 'z' && words.size() + pieces.size() < static_cast<size_t>(size); ++x)
    for (char y = 'a'; y <= 'z' && words.size() + pieces.size() < static_cast<size_t>(size); ++y)
      words.push_back(std::string{x, y});
  for (size_t i = 0; i < words.size() && pieces.size() < static_cast<size_t>(size); ++i)
    pieces.push_back({words[i], -static_cast<float>(i), 1});
  write_sentencepiece(dir / "tokenizer.model", pieces);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})"
      << "\n";
}

// A byte-level BPE tokenizer.json like Qwen2's: the 256 byte tokens (GPT-2's byte-to-character map), merges of
// letter pairs, and <|endoftext|> as the last id.
void write_demo_bpe_tokenizer(const fs::path& dir, int size) {
  const auto& chars = gpt2_byte_chars();
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  std::vector<std::string> merges;
  for (uint32_t b = 0; b < 256; ++b) vocab[chars[b]] = b;
  const std::string space = chars[' '];
  int id = 256;
  for (char x = 'a'; x <= 'z' && id < size - 1; ++x) {
    vocab[space + x] = id++;
    merges.push_back(space + " " + std::string(1, x));
  }
  for (char x = 'a'; x <= 'z' && id < size - 1; ++x)
    for (char y = 'a'; y <= 'z' && id < size - 1; ++y) {
      vocab[std::string{x, y}] = id++;
      merges.push_back(std::string(1, x) + " " + std::string(1, y));
    }
  const nlohmann::ordered_json tok = {
      {"version", "1.0"},
      {"added_tokens", {{{"id", id}, {"content", "<|endoftext|>"}, {"special", true}}}},
      // Qwen2's own pre-tokenizer (llama.cpp's "qwen2"): its split regex, then the byte-level map.
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                                  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
  };
  std::ofstream(dir / "tokenizer.json") << tok.dump() << "\n";
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"add_bos_token": false, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": null})"
      << "\n";
}

std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const uint16_t h = t == DType::F16 ? fp32_to_fp16(v[i]) : fp32_to_bf16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

// A weight [rows, cols] ~ N(0, std^2) whose input columns have varied scales and a few outlier columns, as
// trained LLM weights do.
std::vector<float> weight(XorShift64& rng, size_t rows, size_t cols, double std) {
  std::vector<double> col_scale(cols);
  for (size_t c = 0; c < cols; ++c) col_scale[c] = std::exp(0.3 * rng.gauss()) * (c % 97 == 13 ? 6.0 : 1.0);
  std::vector<float> w(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) w[r * cols + c] = static_cast<float>(std * col_scale[c] * rng.gauss());
  return w;
}

// Norm weights near 1 with a few large channels (every 41st, 4-8x): trained LLMs have such channels, and they make
// the salient input channels AWQ protects.
std::vector<float> norm(XorShift64& rng, size_t n) {
  std::vector<float> w(n);
  for (size_t i = 0; i < n; ++i) {
    w[i] = static_cast<float>(1.0 + 0.05 * rng.gauss());
    if (i % 41 == 7) w[i] *= static_cast<float>(4.0 + 4.0 * rng.uniform());
  }
  return w;
}

}  // namespace

void write_demo_checkpoint(const fs::path& dir, const DemoConfig& c) {
  fs::create_directories(dir);
  XorShift64 rng(c.seed);
  const auto h = static_cast<uint64_t>(c.hidden);
  const auto ff = static_cast<uint64_t>(c.intermediate);
  const uint64_t head_dim = c.head_dim > 0 ? static_cast<uint64_t>(c.head_dim) : h / static_cast<uint64_t>(c.heads);
  const uint64_t q_width = head_dim * static_cast<uint64_t>(c.heads);
  const uint64_t kv = head_dim * static_cast<uint64_t>(c.kv_heads);
  const auto vocab = static_cast<uint64_t>(c.vocab);
  const bool qwen2 = c.architecture == "Qwen2ForCausalLM", qwen3 = c.architecture == "Qwen3ForCausalLM";
  if (!qwen2 && !qwen3 && c.architecture != "LlamaForCausalLM")
    throw std::invalid_argument("demo checkpoints are LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM");

  std::vector<std::vector<SafetensorsBlob>> shards(2);
  auto add = [&](size_t shard, const std::string& name, std::vector<uint64_t> shape, const std::vector<float>& v) {
    shards[shard].push_back({name, c.dtype, std::move(shape), encode(v, c.dtype)});
  };
  add(0, "model.embed_tokens.weight", {vocab, h}, weight(rng, vocab, h, 0.02));
  for (int l = 0; l < c.layers; ++l) {
    const size_t s = l < c.layers / 2 ? 0 : 1;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(s, p + "input_layernorm.weight", {h}, norm(rng, h));
    add(s, p + "self_attn.q_proj.weight", {q_width, h}, weight(rng, q_width, h, 0.02));
    add(s, p + "self_attn.k_proj.weight", {kv, h}, weight(rng, kv, h, 0.02));
    add(s, p + "self_attn.v_proj.weight", {kv, h}, weight(rng, kv, h, 0.02));
    if (qwen2) {
      add(s, p + "self_attn.q_proj.bias", {h}, weight(rng, 1, h, 0.05));
      add(s, p + "self_attn.k_proj.bias", {kv}, weight(rng, 1, kv, 0.05));
      add(s, p + "self_attn.v_proj.bias", {kv}, weight(rng, 1, kv, 0.05));
    }
    if (qwen3) {
      add(s, p + "self_attn.q_norm.weight", {head_dim}, norm(rng, head_dim));
      add(s, p + "self_attn.k_norm.weight", {head_dim}, norm(rng, head_dim));
    }
    add(s, p + "self_attn.o_proj.weight", {h, q_width}, weight(rng, h, q_width, 0.02));
    add(s, p + "post_attention_layernorm.weight", {h}, norm(rng, h));
    add(s, p + "mlp.gate_proj.weight", {ff, h}, weight(rng, ff, h, 0.02));
    add(s, p + "mlp.up_proj.weight", {ff, h}, weight(rng, ff, h, 0.02));
    add(s, p + "mlp.down_proj.weight", {h, ff}, weight(rng, h, ff, 0.02));
  }
  add(1, "model.norm.weight", {h}, norm(rng, h));
  add(1, "lm_head.weight", {vocab, h}, weight(rng, vocab, h, 0.02));

  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", 0}};
  uint64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
    for (const auto& t : shards[s]) {
      index["weight_map"][t.name] = file;
      total += t.bytes.size();
    }
    write_safetensors(dir / file, shards[s], {{"format", "pt"}});
  }
  index["metadata"]["total_size"] = total;
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2) << "\n";

  const bool bpe = qwen2 || qwen3;
  if (bpe) write_demo_bpe_tokenizer(dir, c.vocab);
  else write_demo_tokenizer(dir, c.vocab);

  const nlohmann::ordered_json config = {
      {"architectures", {c.architecture}},
      {"model_type", qwen3 ? "qwen3" : qwen2 ? "qwen2" : "llama"},
      {"hidden_size", c.hidden},
      {"intermediate_size", c.intermediate},
      {"num_hidden_layers", c.layers},
      {"num_attention_heads", c.heads},
      {"num_key_value_heads", c.kv_heads},
      {"vocab_size", c.vocab},
      {"max_position_embeddings", 512},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", bpe ? 1000000.0 : 10000.0},
      {"tie_word_embeddings", false},
      {"torch_dtype", c.dtype == DType::BF16 ? "bfloat16" : (c.dtype == DType::F16 ? "float16" : "float32")},
      {"bos_token_id", bpe ? c.vocab - 1 : 1},
      {"eos_token_id", bpe ? c.vocab - 1 : 2},
  };
  nlohmann::ordered_json full = config;
  if (c.head_dim > 0 || qwen3) full["head_dim"] = head_dim;  // as Qwen3's configs always state it
  if (!c.rope_scaling.empty()) full["rope_scaling"] = nlohmann::ordered_json::parse(c.rope_scaling);
  std::ofstream(dir / "config.json") << full.dump(2) << "\n";
}

namespace {

// Activations [tokens, width]: 8 shared factors mixed into every channel plus channel noise, channel scales spread
// log-normally, and every 61st channel an outlier 20x larger.
std::vector<float> activations(XorShift64& rng, size_t tokens, size_t width) {
  constexpr size_t kFactors = 8;
  std::vector<double> mix(width * kFactors), scale(width);
  for (auto& m : mix) m = rng.gauss();
  for (size_t j = 0; j < width; ++j) scale[j] = std::exp(0.5 * rng.gauss()) * (j % 61 == 7 ? 20.0 : 1.0);
  std::vector<float> x(tokens * width);
  double c[kFactors];
  for (size_t t = 0; t < tokens; ++t) {
    for (auto& v : c) v = rng.gauss();
    for (size_t j = 0; j < width; ++j) {
      double v = 0.5 * rng.gauss();
      for (size_t k = 0; k < kFactors; ++k) v += mix[j * kFactors + k] * c[k] / std::sqrt(double(kFactors));
      x[t * width + j] = static_cast<float>(scale[j] * v);
    }
  }
  return x;
}

}  // namespace

void write_demo_calibration(const fs::path& file, const DemoConfig& c, size_t tokens) {
  XorShift64 rng(c.seed ^ 0xC0FFEEull);
  std::vector<SafetensorsBlob> blobs;
  const auto h = static_cast<uint64_t>(c.hidden), ff = static_cast<uint64_t>(c.intermediate);
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const auto& [module, width] : std::vector<std::pair<std::string, uint64_t>>{
             {"self_attn.q_proj", h}, {"self_attn.o_proj", h}, {"mlp.gate_proj", h}, {"mlp.down_proj", ff}})
      blobs.push_back({p + module, DType::F32, {tokens, width}, encode(activations(rng, tokens, width), DType::F32)});
  }
  write_safetensors(file, blobs, {{"format", "pt"}, {"producer", "quantize make-demo"}});
}

void write_demo_calibration_text(const fs::path& file, size_t sentences) {
  static const char* subjects[] = {"The cat", "A little dog", "My friend", "The old man", "Lily", "The bird", "Tom"};
  static const char* verbs[] = {"saw", "found", "liked", "painted", "lost", "counted", "carried"};
  static const char* objects[] = {"a red ball", "the big tree", "three apples", "a shiny car", "the blue sky", "a small box",
                                  "2 books", "the river"};
  static const char* ends[] = {".", "!", " today.", " in the park.", " again?", ", and smiled."};
  XorShift64 rng(7);
  auto pick = [&](const auto& list) { return list[rng.next() % std::size(list)]; };
  std::ofstream out(file, std::ios::binary);
  if (!out) throw InputError(file.string() + ": cannot write the calibration text");
  for (size_t i = 0; i < sentences; ++i) {
    out << pick(subjects) << ' ' << pick(verbs) << ' ' << pick(objects) << pick(ends);
    out << (i % 5 == 4 ? "\n" : " ");
  }
}

}  // namespace qz
