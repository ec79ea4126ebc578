// Seed corpora for the fuzz targets, made from files this tool writes (a small demo model, its GGUF files in
// several layouts, an imatrix, calibration files): make_corpus DIR writes DIR/<target>/<seed>.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "qz/io/imatrix.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/commands.hpp"

namespace fs = std::filesystem;

namespace {

void copy(const fs::path& from, const fs::path& dir, const std::string& name) {
  fs::create_directories(dir);
  fs::copy_file(from, dir / name, fs::copy_options::overwrite_existing);
}

void text(const fs::path& dir, const std::string& name, const std::string& s) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  const fs::path out = argv[1], work = out / ".work";
  fs::create_directories(work);
  qz::DemoConfig small;
  small.hidden = 64;
  small.intermediate = 128;
  small.layers = 1;
  small.heads = 2;
  small.kv_heads = 1;
  small.vocab = 300;
  small.dtype = qz::DType::F16;
  qz::write_demo_checkpoint(work / "demo", small);
  qz::DemoConfig qwen = small;
  qwen.architecture = "Qwen2ForCausalLM";
  qz::write_demo_checkpoint(work / "qwen", qwen);
  qz::DemoConfig qwen3 = small;
  qwen3.architecture = "Qwen3ForCausalLM";
  qwen3.head_dim = 64;
  qz::write_demo_checkpoint(work / "qwen3", qwen3);

  for (const auto& e : fs::directory_iterator(work / "demo"))
    if (e.path().extension() == ".safetensors") copy(e.path(), out / "safetensors", e.path().filename().string());
  // GGUF in llama.cpp's types, the own integer layout and NF4 (side tensors, custom keys).
  for (const char* type : {"F16", "Q8_0", "Q4_K_M", "int3_asym_g32", "nf4_b64_dq"}) {
    qz::QuantizeJob j;
    j.inputs = {work / "demo"};
    j.output = work / (std::string(type) + ".gguf");
    j.options.type = type;
    j.force = true;
    qz::run_quantize(j);
    copy(j.output, out / "gguf", j.output.filename().string());
  }
  qz::Imatrix m;
  m.tensors["blk.0.attn_q.weight"] = {std::vector<float>(64, 2.0f), {4.0f}};
  m.tensors["blk.0.ffn_down.weight"] = {std::vector<float>(128, 1.0f), {4.0f}};
  m.datasets = {"calib.txt"};
  m.chunk_count = 4;
  m.chunk_size = 64;
  qz::write_imatrix_gguf(work / "imatrix.gguf", m, true);
  copy(work / "imatrix.gguf", out / "imatrix", "imatrix.gguf");
  {
    // The legacy .dat form (the tool reads it, never writes it), laid out as io/imatrix.hpp documents: two entries,
    // then the last chunk and the dataset name.
    std::string dat;
    auto i32 = [&](int32_t v) { dat.append(reinterpret_cast<const char*>(&v), 4); };
    auto f32 = [&](float v) { dat.append(reinterpret_cast<const char*>(&v), 4); };
    i32(2);
    for (const auto& [name, n] : std::vector<std::pair<std::string, int32_t>>{{"blk.0.attn_q.weight", 64}, {"blk.0.ffn_down.weight", 128}}) {
      i32(static_cast<int32_t>(name.size()));
      dat += name;
      i32(4);
      i32(n);
      for (int32_t k = 0; k < n; ++k) f32(0.5f + 0.01f * static_cast<float>(k));
    }
    i32(4);
    i32(9);
    dat += "calib.txt";
    text(out / "imatrix", "imatrix.dat", dat);
  }

  copy(work / "demo" / "config.json", out / "config_json", "llama.json");
  copy(work / "qwen" / "config.json", out / "config_json", "qwen2.json");
  copy(work / "qwen3" / "config.json", out / "config_json", "qwen3.json");
  nlohmann::json q = nlohmann::json::parse(std::ifstream(work / "demo" / "config.json"));
  q["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}, {"sym", true}, {"desc_act", false}};
  text(out / "config_json", "gptq.json", q.dump());
  q["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"zero_point", true}, {"version", "gemm"}};
  text(out / "config_json", "awq.json", q.dump());
  q["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  text(out / "config_json", "llama3.json", q.dump());

  copy(work / "qwen" / "tokenizer.json", out / "tokenizer_json", "qwen2.json");
  copy(work / "demo" / "tokenizer.model", out / "tokenizer_model", "llama.model");

  qz::write_demo_calibration_text(work / "calib.txt", 20);
  copy(work / "calib.txt", out / "calibration", "calib.txt");
  text(out / "calibration", "calib.jsonl", "{\"text\": \"Once upon a time\"}\n{\"text\": \"there was a cat.\"}\n");
  text(out / "calibration", "strings.json", "[\"Once upon a time\", \"there was a cat.\"]");
  text(out / "calibration", "ids.json", "[[1, 2, 3, 40], [5, 6, 7]]");
  qz::write_demo_calibration(work / "calib.safetensors", small, 8);
  copy(work / "calib.safetensors", out / "calibration", "calib.safetensors");
  fs::remove_all(work);
  return 0;
}
