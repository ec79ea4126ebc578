// Every family of malformed input, through the quantize executable (issue 16): exit code 2, a message that names
// the file and says what is wrong, no output and no temporary file left behind, and the inputs' bytes unchanged.
// One test per family; each starts from a fresh demo checkpoint and breaks one thing in it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "cli_runner.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/io/safetensors.hpp"
#include "raw_gguf.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

const char* const kShard = "model-00001-of-00002.safetensors";  // the demo's first shard: embeddings, layer 0, ...
const char* const kQ = "model.layers.0.self_attn.q_proj.weight";   // BF16 [256, 256] in kShard

std::string read_text(const fs::path& p) {
  const auto b = test::read_bytes(p);
  return {b.begin(), b.end()};
}
void write_text(const fs::path& p, const std::string& s) { test::write_bytes(p, {s.begin(), s.end()}); }

void edit_json(const fs::path& p, const std::function<void(json&)>& edit) {
  json j = json::parse(read_text(p));
  edit(j);
  write_text(p, j.dump(1));
}

// A safetensors file's header (JSON) and where its data section starts.
struct SafetensorsHeader {
  json header;
  size_t data_start;
};
SafetensorsHeader read_header(const fs::path& p) {
  const auto b = test::read_bytes(p);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  return {json::parse(std::string(b.begin() + 8, b.begin() + 8 + static_cast<std::ptrdiff_t>(n))), 8 + n};
}
// Replaces the header text (edit works on the text, so it can make what JSON cannot: duplicate keys), keeping the data.
void edit_header_text(const fs::path& p, const std::function<void(std::string&)>& edit) {
  const auto b = test::read_bytes(p);
  const SafetensorsHeader h = read_header(p);
  std::string text = h.header.dump();
  edit(text);
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  out += text;
  out.append(b.begin() + static_cast<std::ptrdiff_t>(h.data_start), b.end());
  write_text(p, out);
}
void edit_header(const fs::path& p, const std::function<void(json&)>& edit) {
  edit_header_text(p, [&](std::string& text) {
    json j = json::parse(text);
    edit(j);
    text = j.dump();
  });
}
// Overwrites element `index` of tensor `name` (elements of raw.size() bytes).
void poke(const fs::path& p, const std::string& name, size_t index, const std::vector<uint8_t>& raw) {
  const SafetensorsHeader h = read_header(p);
  auto b = test::read_bytes(p);
  const size_t at = h.data_start + h.header.at(name).at("data_offsets").at(0).get<size_t>() + index * raw.size();
  std::copy(raw.begin(), raw.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
  test::write_bytes(p, b);
}
void cut(const fs::path& p, size_t remove_from_end) {
  fs::resize_file(p, fs::file_size(p) - remove_from_end);
}
std::vector<uint8_t> f32_bytes(const std::vector<float>& v) { return test::to_bytes(v); }

// A legacy .dat imatrix with one entry of `values`.
void write_imatrix_dat(const fs::path& p, const std::string& name, const std::vector<float>& values) {
  std::vector<uint8_t> b;
  auto put = [&](int32_t v) {
    const auto* q = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), q, q + 4);
  };
  put(1);
  put(static_cast<int32_t>(name.size()));
  b.insert(b.end(), name.begin(), name.end());
  put(1);
  put(static_cast<int32_t>(values.size()));
  const auto v = f32_bytes(values);
  b.insert(b.end(), v.begin(), v.end());
  test::write_bytes(p, b);
}

// Runs the tool on the demo `m` and stops the case if it fails (for files a case starts from).
void must(const std::string& args) {
  const auto r = test::run_quantize(args);
  if (r.code != 0) throw std::runtime_error("setup failed: quantize " + args + "\n" + r.output);
}

struct Case {
  std::string family;
  // Breaks something in the demo checkpoint at m and returns the command's arguments; "{out}" stands for an output
  // path without extension in an empty directory of its own.
  std::function<std::string(const fs::path& m)> make;
  std::string file;               // the file the message must name
  std::vector<std::string> says;  // and what it must say
};

std::string s(const fs::path& p) { return p.string(); }

std::vector<Case> cases() {
  std::vector<Case> c;
  auto add = [&](std::string family, std::string file, std::vector<std::string> says,
                 std::function<std::string(const fs::path&)> make) {
    c.push_back({std::move(family), std::move(make), std::move(file), std::move(says)});
  };
  // ---- safetensors files
  add("SafetensorsShorterThanItsHeaderLength", "x.safetensors", {"truncated"}, [](const fs::path& m) {
    test::write_bytes(m / "x.safetensors", {1, 2, 3});
    return s(m / "x.safetensors") + " -o {out}.gguf";
  });
  add("SafetensorsHeaderLongerThanTheFile", "x.safetensors", {"header length 1000"}, [](const fs::path& m) {
    test::write_bytes(m / "x.safetensors", {0xE8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'});
    return s(m / "x.safetensors") + " -o {out}.gguf";
  });
  add("SafetensorsHeaderIsNotJson", kShard, {"invalid JSON header"}, [](const fs::path& m) {
    edit_header_text(m / kShard, [](std::string& t) { t.resize(t.size() / 2); });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsHeaderIsNotAnObject", kShard, {"not an object"}, [](const fs::path& m) {
    edit_header_text(m / kShard, [](std::string& t) { t = "[1, 2]"; });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsUnknownDtype", kShard, {kQ, "F7"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) { h[kQ]["dtype"] = "F7"; });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsShapeDisagreesWithOffsets", kShard, {kQ, "data_offsets span"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) { h[kQ]["shape"] = {256, 255}; });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsTruncatedData", kShard, {"truncated"}, [](const fs::path& m) {
    cut(m / kShard, fs::file_size(m / kShard) / 2);
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsOverlappingTensors", kShard, {"overlap"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) {
      auto& k = h["model.layers.0.self_attn.k_proj.weight"]["data_offsets"];
      const int64_t shift = 64;
      k = {k[0].get<int64_t>() - shift, k[1].get<int64_t>() - shift};
    });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsNegativeDimension", kShard, {kQ}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) { h[kQ]["shape"] = {-256, -256}; });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsDimensionsOverflow", kShard, {kQ, "overflow"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) { h[kQ]["shape"] = {1ull << 40, 1ull << 40}; });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsDuplicateTensorName", kShard, {"duplicate", "q_proj"}, [](const fs::path& m) {
    edit_header_text(m / kShard, [](std::string& t) {
      const std::string k = "model.layers.0.self_attn.k_proj.weight";
      t.replace(t.find(k), k.size(), kQ);
    });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsMetadataNotStrings", kShard, {"__metadata__"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) { h["__metadata__"]["format"] = 5; });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsTrailingBytes", kShard, {"trailing bytes"}, [](const fs::path& m) {
    auto b = test::read_bytes(m / kShard);
    b.resize(b.size() + 6, 0);
    test::write_bytes(m / kShard, b);
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsGapBetweenTensors", kShard, {"not contiguous"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) {
      auto& k = h["model.layers.0.self_attn.k_proj.weight"]["data_offsets"];
      k = {k[0].get<int64_t>() + 64, k[1].get<int64_t>() + 64};
    });
    return s(m) + " -o {out}.gguf";
  });
  add("SafetensorsMissingOffsets", kShard, {kQ, "data_offsets"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) { h[kQ].erase("data_offsets"); });
    return s(m) + " -o {out}.gguf";
  });
  add("WeightWithNaN", kShard, {"attn_q.weight", "element 5", "NaN"}, [](const fs::path& m) {
    poke(m / kShard, kQ, 5, {0xC0, 0x7F});
    return s(m) + " -o {out}.gguf --type Q4_0";
  });
  add("WeightWithInf", kShard, {"attn_q.weight", "element 7", "+Inf"}, [](const fs::path& m) {
    poke(m / kShard, kQ, 7, {0x80, 0x7F});
    return s(m) + " -o {out}.gguf --type Q4_K_M";
  });
  // ---- sharded checkpoints
  add("IndexNamesAMissingShard", "model.safetensors.index.json", {"model-00002-of-00002.safetensors", "missing"},
      [](const fs::path& m) {
        fs::remove(m / "model-00002-of-00002.safetensors");
        return s(m) + " -o {out}.gguf";
      });
  add("IndexIsNotJson", "model.safetensors.index.json", {"invalid JSON"}, [](const fs::path& m) {
    write_text(m / "model.safetensors.index.json", "{\"weight_map\": ");
    return s(m) + " -o {out}.gguf";
  });
  add("IndexMapsATensorToTheWrongShard", "model.safetensors.index.json", {"model.embed_tokens.weight", "does not contain it"},
      [](const fs::path& m) {
        edit_json(m / "model.safetensors.index.json",
                  [](json& j) { j["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors"; });
        return s(m) + " -o {out}.gguf";
      });
  add("IndexWeightMapIsNotAnObject", "model.safetensors.index.json", {"weight_map"}, [](const fs::path& m) {
    write_text(m / "model.safetensors.index.json", R"({"weight_map": [1]})");
    return s(m) + " -o {out}.gguf";
  });
  // ---- config.json
  add("ConfigIsNotJson", "config.json", {"invalid JSON"}, [](const fs::path& m) {
    write_text(m / "config.json", R"({"hidden_size": 12)");
    return s(m) + " -o {out}.gguf";
  });
  add("ConfigUnsupportedArchitecture", "config.json", {"FooForCausalLM", "not supported"}, [](const fs::path& m) {
    edit_json(m / "config.json", [](json& j) { j["architectures"] = {"FooForCausalLM"}; });
    return s(m) + " -o {out}.gguf";
  });
  add("ConfigHiddenSizeContradictsTheTensors", "config.json", {"hidden_size 128", "token_embd.weight"}, [](const fs::path& m) {
    edit_json(m / "config.json", [](json& j) { j["hidden_size"] = 128; });
    return s(m) + " -o {out}.gguf";
  });
  add("ConfigRmsNormEpsOutOfFloatRange", "config.json", {"rms_norm_eps", "float32"}, [](const fs::path& m) {
    edit_json(m / "config.json", [](json& j) { j["rms_norm_eps"] = 1e300; });
    return s(m) + " -o {out}.gguf";
  });
  add("ConfigRopeScalingTypeNotAString", "config.json", {"rope_scaling.type"}, [](const fs::path& m) {
    edit_json(m / "config.json", [](json& j) { j["rope_scaling"] = {{"type", 5}}; });
    return s(m) + " -o {out}.gguf";
  });
  add("ConfigVocabSizeHuge", "config.json", {"vocab_size"}, [](const fs::path& m) {
    edit_json(m / "config.json", [](json& j) { j["vocab_size"] = 4000000000LL; });
    return s(m) + " -o {out}.gguf";
  });
  add("TensorShapeContradictsTheConfig", "config.json", {"attn_q.weight", "[128, 512]"}, [](const fs::path& m) {
    edit_header(m / kShard, [](json& h) { h[kQ]["shape"] = {128, 512}; });
    return s(m) + " -o {out}.gguf";
  });
  // Qwen3: a sliding-window variant (llama.cpp's qwen3 has full attention in every layer), and a checkpoint without
  // the per-head Q/K norms that llama.cpp requires (here: the Llama demo's tensors under Qwen3's architecture).
  add("ConfigQwen3SlidingWindow", "config.json", {"use_sliding_window", "qwen3"}, [](const fs::path& m) {
    edit_json(m / "config.json", [](json& j) {
      j["architectures"] = {"Qwen3ForCausalLM"};
      j["use_sliding_window"] = true;
    });
    return s(m) + " -o {out}.gguf";
  });
  add("Qwen3CheckpointWithoutQkNorms", "m", {"Qwen3ForCausalLM", "Q/K norms", "blk.0.attn_q_norm.weight"}, [](const fs::path& m) {
    edit_json(m / "config.json", [](json& j) { j["architectures"] = {"Qwen3ForCausalLM"}; });
    return s(m) + " -o {out}.gguf";
  });
  add("ConfigMissingForAwq", "m", {"config.json"}, [](const fs::path& m) {
    fs::remove(m / "config.json");
    return s(m) + " -o {out}.gguf --method awq --calib " + s(m / "calib.safetensors");
  });
  // ---- tokenizers
  add("TokenizerModelTruncated", "tokenizer.model", {"malformed SentencePiece model"}, [](const fs::path& m) {
    cut(m / "tokenizer.model", fs::file_size(m / "tokenizer.model") - 777);
    return s(m) + " -o {out}.gguf";
  });
  auto tokenizer_json = [](const fs::path& m, const json& tok) {
    fs::remove(m / "tokenizer.model");
    write_text(m / "tokenizer.json", tok.dump());
  };
  add("TokenizerJsonNegativeId", "tokenizer.json", {"model.vocab[\"b\"]", "id -1"}, [=](const fs::path& m) {
    tokenizer_json(m, {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", -1}}}, {"merges", json::array()}}}});
    return s(m) + " -o {out}.gguf";
  });
  add("TokenizerJsonAddedTokenNegativeId", "tokenizer.json", {"added_tokens", "-1"}, [=](const fs::path& m) {
    tokenizer_json(m, {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}},
                       {"added_tokens", {{{"id", -1}, {"content", "<s>"}, {"special", true}}}}});
    return s(m) + " -o {out}.gguf";
  });
  add("TokenizerJsonIdTooLarge", "tokenizer.json", {"100000000000"}, [=](const fs::path& m) {
    tokenizer_json(m, {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 100000000000LL}}}, {"merges", json::array()}}}});
    return s(m) + " -o {out}.gguf";
  });
  add("TokenizerJsonStringId", "tokenizer.json", {"model.vocab[\"b\"]"}, [=](const fs::path& m) {
    tokenizer_json(m, {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", "1"}}}, {"merges", json::array()}}}});
    return s(m) + " -o {out}.gguf";
  });
  add("TokenizerJsonWithoutMerges", "tokenizer.json", {"merges"}, [=](const fs::path& m) {
    tokenizer_json(m, {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}}}});
    return s(m) + " -o {out}.gguf";
  });
  add("TokenizerJsonIsNotJson", "tokenizer.json", {"JSON"}, [](const fs::path& m) {
    fs::remove(m / "tokenizer.model");
    write_text(m / "tokenizer.json", R"({"model": {"type": "BPE", "vocab": )");
    return s(m) + " -o {out}.gguf";
  });
  // ---- calibration
  add("CalibrationFileMissing", "nope.txt", {"cannot read"}, [](const fs::path& m) {
    return s(m) + " -o {out}.gguf --method gptq --calib " + s(m / "nope.txt");
  });
  add("CalibrationTextEmpty", "e.txt", {"no text"}, [](const fs::path& m) {
    write_text(m / "e.txt", "");
    return s(m) + " -o {out}.gguf --method gptq --calib " + s(m / "e.txt");
  });
  add("CalibrationJsonlWithoutText", "e.jsonl", {":1", "\"text\""}, [](const fs::path& m) {
    write_text(m / "e.jsonl", "{\"content\": \"hello\"}\n");
    return s(m) + " -o {out}.gguf --method gptq --calib " + s(m / "e.jsonl");
  });
  add("CalibrationJsonlBadLine", "e.jsonl", {":2", "not valid JSON"}, [](const fs::path& m) {
    write_text(m / "e.jsonl", "{\"text\": \"hello\"}\n{\"text\": \n");
    return s(m) + " -o {out}.gguf --method awq --calib " + s(m / "e.jsonl");
  });
  add("CalibrationTokenIdsOutsideTheVocabulary", "ids.json", {"99999", "vocabulary of 512"}, [](const fs::path& m) {
    write_text(m / "ids.json", "[[1, 2, 99999]]");
    return s(m) + " -o {out}.gguf --method gptq --calib " + s(m / "ids.json");
  });
  add("CalibrationJsonNeitherStringsNorIds", "c.json", {"c.json"}, [](const fs::path& m) {
    write_text(m / "c.json", R"({"text": "hello"})");
    return s(m) + " -o {out}.gguf --method gptq --calib " + s(m / "c.json");
  });
  add("CalibrationActivationsWithNaN", "calib.safetensors", {"model.layers.0.self_attn.q_proj", "not finite"},
      [](const fs::path& m) {
        poke(m / "calib.safetensors", "model.layers.0.self_attn.q_proj", 3, f32_bytes({std::nanf("")}));
        return s(m) + " -o {out}.gguf --method gptq --calib " + s(m / "calib.safetensors");
      });
  add("CalibrationActivationsWithZeroTokens", "c.safetensors", {"model.layers.0.self_attn.q_proj", "holds no token"},
      [](const fs::path& m) {
        write_safetensors(m / "c.safetensors", {{"model.layers.0.self_attn.q_proj", DType::F32, {0, 256}, {}}});
        return s(m) + " -o {out}.gguf --method gptq --allow-missing-calib --calib " + s(m / "c.safetensors");
      });
  add("CalibrationActivationsOfTheWrongWidth", "c.safetensors", {"model.layers.0.self_attn.q_proj", "100"},
      [](const fs::path& m) {
        write_safetensors(m / "c.safetensors", {{"model.layers.0.self_attn.q_proj", DType::F32, {2, 100},
                                                 f32_bytes(std::vector<float>(200, 0.5f))}});
        return s(m) + " -o {out}.gguf --method gptq --allow-missing-calib --calib " + s(m / "c.safetensors");
      });
  add("CalibrationActivationsNotFloats", "c.safetensors", {"model.layers.0.self_attn.q_proj", "floats"},
      [](const fs::path& m) {
        write_safetensors(m / "c.safetensors", {{"model.layers.0.self_attn.q_proj", DType::I32, {2, 256},
                                                 std::vector<uint8_t>(2048, 0)}});
        return s(m) + " -o {out}.gguf --method gptq --allow-missing-calib --calib " + s(m / "c.safetensors");
      });
  auto hessian = [](const fs::path& m, uint64_t width, float tokens) {
    std::vector<float> h(width * width, 0.0f);
    for (uint64_t i = 0; i < width; ++i) h[i * width + i] = 1.0f;
    write_safetensors(m / "h.safetensors", {{"model.layers.0.self_attn.q_proj.hessian", DType::F32, {width, width}, f32_bytes(h)},
                                            {"model.layers.0.self_attn.q_proj.hessian_tokens", DType::F32, {1}, f32_bytes({tokens})}});
    return s(m) + " -o {out}.gguf --method gptq --allow-missing-calib --calib " + s(m / "h.safetensors");
  };
  add("CalibrationHessianTokenCountHuge", "h.safetensors", {"hessian_tokens", "1e+30"},
      [=](const fs::path& m) { return hessian(m, 256, 1e30f); });
  add("CalibrationHessianOfTheWrongWidth", "h.safetensors", {"hessian", "4", "256"}, [](const fs::path& m) {
    write_safetensors(m / "h.safetensors",
                      {{"model.layers.0.self_attn.q_proj.hessian", DType::F32, {4, 256}, f32_bytes(std::vector<float>(1024, 0.0f))},
                       {"model.layers.0.self_attn.q_proj.hessian_tokens", DType::F32, {1}, f32_bytes({8.0f})}});
    return s(m) + " -o {out}.gguf --method gptq --allow-missing-calib --calib " + s(m / "h.safetensors");
  });
  // ---- importance matrices
  add("ImatrixMissing", "nope.gguf", {"cannot open"}, [](const fs::path& m) {
    return s(m) + " -o {out}.gguf --type Q4_K_M --imatrix " + s(m / "nope.gguf");
  });
  add("ImatrixTruncated", "im.gguf", {"truncated"}, [](const fs::path& m) {
    must("imatrix " + s(m) + " --calib " + s(m / "calib.txt") + " -o " + s(m / "im.gguf") + " -q");
    cut(m / "im.gguf", 100);
    return s(m) + " -o {out}.gguf --type Q4_K_M --imatrix " + s(m / "im.gguf");
  });
  add("ImatrixDatWithNaN", "im.dat", {"blk.0.attn_q.weight", "NaN"}, [](const fs::path& m) {
    std::vector<float> v(256, 1.0f);
    v[9] = std::nanf("");
    write_imatrix_dat(m / "im.dat", "blk.0.attn_q.weight", v);
    return s(m) + " -o {out}.gguf --type Q4_K_M --imatrix " + s(m / "im.dat");
  });
  add("ImatrixDatTruncated", "im.dat", {"truncated"}, [](const fs::path& m) {
    write_imatrix_dat(m / "im.dat", "blk.0.attn_q.weight", std::vector<float>(256, 1.0f));
    cut(m / "im.dat", 10);
    return s(m) + " -o {out}.gguf --type Q4_K_M --imatrix " + s(m / "im.dat");
  });
  add("ImatrixOfTheWrongWidth", "im.gguf", {"blk.0.attn_q.weight", "100"}, [](const fs::path& m) {
    Imatrix im;
    im.tensors["blk.0.attn_q.weight"] = {std::vector<float>(100, 1.0f), {1.0f}};
    write_imatrix_gguf(m / "im.gguf", im, true);
    return s(m) + " -o {out}.gguf --type Q4_K_M --imatrix " + s(m / "im.gguf");
  });
  add("ImatrixThatIsAModel", "q.gguf", {"not an imatrix"}, [](const fs::path& m) {
    must(s(m) + " -o " + s(m / "q.gguf") + " --type Q8_0 -q");
    return s(m) + " -o {out}.gguf --type Q4_K_M --imatrix " + s(m / "q.gguf");
  });
  // ---- GGUF inputs
  add("GgufBadMagic", "bad.gguf", {"not a GGUF file"}, [](const fs::path& m) {
    write_text(m / "bad.gguf", "GGXF and then some bytes");
    return "inspect " + s(m / "bad.gguf");
  });
  add("GgufUnsupportedVersion", "v1.gguf", {"version 1"}, [](const fs::path& m) {
    test::RawGguf g;
    g.header(1, 0, 0);
    test::write_bytes(m / "v1.gguf", g.b);
    return s(m / "v1.gguf") + " -o {out}.gguf";
  });
  add("GgufUnknownTensorType", "t.gguf", {"'w'", "type 99"}, [](const fs::path& m) {
    test::RawGguf g;
    g.header(3, 1, 0).tensor("w", {32}, 99, 0).pad().data(64);
    test::write_bytes(m / "t.gguf", g.b);
    return "dequantize " + s(m / "t.gguf") + " -o {out}.safetensors";
  });
  add("GgufByteSizeOverflows", "o.gguf", {"'w'", "64 bits"}, [](const fs::path& m) {
    test::RawGguf g;
    g.header(3, 1, 0).tensor("w", {8, (1ll << 59) + 1}, 0, 0).pad().data(64);
    test::write_bytes(m / "o.gguf", g.b);
    return "inspect " + s(m / "o.gguf");
  });
  add("GgufByteSizeOverflowsDequantize", "o.gguf", {"'w'", "64 bits"}, [](const fs::path& m) {
    test::RawGguf g;
    g.header(3, 1, 0).tensor("w", {8, (1ll << 59) + 1}, 0, 0).pad().data(64);
    test::write_bytes(m / "o.gguf", g.b);
    return "dequantize " + s(m / "o.gguf") + " -o {out}.safetensors";
  });
  add("GgufDuplicateTensor", "d.gguf", {"duplicate tensor 'w'"}, [](const fs::path& m) {
    test::RawGguf g;
    g.header(3, 2, 0).tensor("w", {32}, 0, 0).tensor("w", {32}, 0, 128).pad().data(256);
    test::write_bytes(m / "d.gguf", g.b);
    return s(m / "d.gguf") + " -o {out}.gguf";
  });
  add("GgufStringLongerThanTheFile", "k.gguf", {"truncated", "string"}, [](const fs::path& m) {
    test::RawGguf g;
    g.header(3, 0, 1).str("k").put<int32_t>(8).put<uint64_t>(1000);
    test::write_bytes(m / "k.gguf", g.b);
    return "inspect " + s(m / "k.gguf");
  });
  auto truncated_gguf = [](const fs::path& m) {
    must(s(m) + " -o " + s(m / "q.gguf") + " --type Q4_0 -q");
    cut(m / "q.gguf", 1000);
    return s(m / "q.gguf");
  };
  add("GgufTruncatedInspect", "q.gguf", {"truncated"}, [=](const fs::path& m) { return "inspect " + truncated_gguf(m); });
  add("GgufTruncatedDequantize", "q.gguf", {"truncated"},
      [=](const fs::path& m) { return "dequantize " + truncated_gguf(m) + " -o {out}.safetensors"; });
  add("GgufTruncatedRequantize", "q.gguf", {"truncated"},
      [=](const fs::path& m) { return truncated_gguf(m) + " -o {out}.gguf --allow-requantize"; });
  add("GgufTruncatedEval", "q.gguf", {"truncated"},
      [=](const fs::path& m) { return "eval " + truncated_gguf(m) + " --text " + s(m / "calib.txt"); });
  add("GgufQuantizedWithoutAllowRequantize", "q.gguf", {"--allow-requantize"}, [](const fs::path& m) {
    must(s(m) + " -o " + s(m / "q.gguf") + " --type Q4_0 -q");
    return s(m / "q.gguf") + " -o {out}.gguf --type Q8_0";
  });
  add("GgufSplitPartMissing", "s-00001-of-00003.gguf", {"part 2 of 3", "missing"}, [](const fs::path& m) {
    must(s(m) + " -o " + s(m / "s.gguf") + " --type Q8_0 -q --split-max-tensors 8");
    fs::remove(m / "s-00002-of-00003.gguf");
    return s(m / "s-00001-of-00003.gguf") + " -o {out}.gguf";
  });
  // ---- evaluation and tokenization inputs
  add("EvalTextMissing", "nope.txt", {"cannot read"}, [](const fs::path& m) {
    return "eval " + s(m) + " --text " + s(m / "nope.txt");
  });
  add("EvalTokensNotAList", "t.json", {"list of token ids"}, [](const fs::path& m) {
    write_text(m / "t.json", R"({"tokens": 5})");
    return "eval " + s(m) + " --tokens " + s(m / "t.json");
  });
  add("EvalTokenOutsideTheVocabulary", "t.json", {"70000"}, [](const fs::path& m) {
    std::string ids = "[1";
    for (int i = 0; i < 1100; ++i) ids += i == 500 ? ", 70000" : ", 3";
    write_text(m / "t.json", ids + "]");
    return "eval " + s(m) + " --tokens " + s(m / "t.json");
  });
  add("TokenizeTextMissing", "nope.txt", {"cannot read"}, [](const fs::path& m) {
    return "tokenize " + s(m) + " --text " + s(m / "nope.txt");
  });
  // ---- quantized checkpoints in
  add("GptqCheckpointBitsContradictTheTensors", "gptq", {"GPTQ 8-bit", "needs"}, [](const fs::path& m) {
    must(s(m) + " -o " + s(m / "gptq") + " --method gptq --bits 4 --calib " + s(m / "calib.safetensors") +
         " --output-format gptq -q");
    edit_json(m / "gptq" / "config.json", [](json& j) { j["quantization_config"]["bits"] = 8; });
    return s(m / "gptq") + " -o {out}.gguf";
  });
  return c;
}

// Every file under dir with its bytes.
std::map<std::string, std::vector<uint8_t>> snapshot(const fs::path& dir) {
  std::map<std::string, std::vector<uint8_t>> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = test::read_bytes(e.path());
  return files;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.family; }

class MalformedInput : public ::testing::TestWithParam<Case> {};

TEST_P(MalformedInput, ExitsWithTwoNamingTheFileLeavesNothingAndKeepsTheInput) {
  const Case& c = GetParam();
  test::TempDir dir;
  const fs::path m = dir / "m", out = dir / "out";
  ASSERT_EQ(test::run_quantize("make-demo " + s(m) + " -q").code, 0);
  fs::create_directories(out);
  std::string args = c.make(m);
  for (size_t at; (at = args.find("{out}")) != std::string::npos;) args.replace(at, 5, s(out / "o"));
  SCOPED_TRACE("quantize " + args);
  const auto before = snapshot(m);
  const auto r = test::run_quantize(args);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(c.file), std::string::npos) << r.output << "\nmissing the file: " << c.file;
  for (const auto& part : c.says) EXPECT_NE(r.output.find(part), std::string::npos) << r.output << "\nmissing: " << part;
  EXPECT_TRUE(fs::is_empty(out)) << "something was written to " << out;
  const auto after = snapshot(m);  // the inputs unchanged, and no temporary file beside them
  EXPECT_EQ(after.size(), before.size());
  for (const auto& [name, bytes] : before) {
    const auto it = after.find(name);
    ASSERT_NE(it, after.end()) << name << " vanished";
    EXPECT_TRUE(it->second == bytes) << name << " changed";
  }
}

INSTANTIATE_TEST_SUITE_P(Families, MalformedInput, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.family; });

}  // namespace
}  // namespace qz
