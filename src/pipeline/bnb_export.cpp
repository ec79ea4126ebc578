#include "qz/pipeline/bnb_export.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "qz/core/bytes.hpp"
#include "qz/core/error.hpp"
#include "qz/formats/nf4.hpp"
#include "qz/model/tensor_roles.hpp"
#include "qz/model/tokenizer.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

constexpr size_t kQuantStateBytes = 256;

bool is_linear_weight(const SafetensorsTensor& t) {
  return t.shape.size() == 2 && t.name.ends_with(".weight") && is_block_linear(classify_tensor(t.name).role);
}

std::string torch_dtype(DType t) {
  switch (t) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: return "float32";
  }
}

}  // namespace

Report export_bnb(const Checkpoint& ckpt, const QuantizeConfig& cfg, const fs::path& out_dir, bool overwrite) {
  const auto t0 = std::chrono::steady_clock::now();
  Nf4Options o;
  if (cfg.target.format_name.empty() || !parse_nf4_name(cfg.target.format_name, &o))
    throw UsageError("--output-format bnb needs --method nf4 or --method fp4 (or --type nf4_b64_dq, ...)");
  if (!ckpt.config()) throw UsageError("--output-format bnb needs a checkpoint directory with config.json");
  const std::string quant_type = o.fp4 ? "fp4" : "nf4";
  std::error_code ec;
  if (fs::exists(out_dir / "model.safetensors", ec) && !overwrite)
    throw UsageError((out_dir / "model.safetensors").string() + ": output exists; pass --force to overwrite it");
  fs::create_directories(out_dir, ec);
  if (ec) throw UsageError(out_dir.string() + ": cannot create the output directory: " + ec.message());

  // Declare every key first (sizes are known from the shapes), then stream the tensors.
  std::vector<SafetensorsWriter::Decl> decls;
  Report report;
  report.input = ckpt.source().string();
  report.output = out_dir.string();
  report.method = method_name(cfg.method);
  report.target = o.name();
  DType compute = DType::F32;
  for (const auto& e : ckpt.tensors()) {
    const SafetensorsTensor& t = *e.tensor;
    if (!is_linear_weight(t)) {
      decls.push_back({t.name, t.dtype, t.shape});
      continue;
    }
    compute = t.dtype;
    const uint64_t n = t.numel(), blocks = nf4_blocks(n, o);
    decls.push_back({t.name, DType::U8, {(n + 1) / 2, 1}});
    decls.push_back({t.name + ".absmax", o.double_quant ? DType::U8 : DType::F32, {blocks}});
    decls.push_back({t.name + ".quant_map", DType::F32, {16}});
    if (o.double_quant) {
      decls.push_back({t.name + ".nested_absmax", DType::F32, {(blocks + 255) / 256}});
      decls.push_back({t.name + ".nested_quant_map", DType::F32, {256}});
    }
    decls.push_back({t.name + ".quant_state.bitsandbytes__" + quant_type, DType::U8, {kQuantStateBytes}});
  }

  OutputFile out(out_dir / "model.safetensors", overwrite);
  SafetensorsWriter w(out, decls, {{"format", "pt"}});
  const auto& code = o.fp4 ? fp4_code() : nf4_code();
  const auto& map = dynamic_map();
  for (const auto& e : ckpt.tensors()) {
    const SafetensorsTensor& t = *e.tensor;
    const auto src = e.bytes();
    if (!is_linear_weight(t)) {
      w.write_next(src);
      report.input_bytes += src.size();
      report.tensor_bytes += src.size();
      report.weights += t.numel();
      continue;
    }
    const auto ts = std::chrono::steady_clock::now();
    std::vector<float> x(t.numel());
    convert_to_f32(src.data(), t.dtype, x.data(), x.size());
    for (size_t i = 0; i < x.size(); ++i)
      if (!std::isfinite(x[i]))
        throw InputError(fmt::format("{}: tensor '{}': element {} is not finite", e.file->path().string(), t.name, i));
    const Nf4Tensor q = quantize_nf4(x.data(), x.size(), o);
    w.write_next(q.packed);
    if (o.double_quant) w.write_next(q.qabsmax);
    else w.write_next(bytes_of(q.absmax.data(), q.absmax.size()));
    w.write_next(bytes_of(code.data(), code.size()));
    if (o.double_quant) {
      w.write_next(bytes_of(q.nested_absmax.data(), q.nested_absmax.size()));
      w.write_next(bytes_of(map.data(), map.size()));
    }
    nlohmann::ordered_json state = {{"quant_type", quant_type},
                                    {"blocksize", o.blocksize},
                                    {"dtype", torch_dtype(t.dtype)},
                                    {"shape", t.shape}};
    if (o.double_quant) {
      state["nested_blocksize"] = Nf4Options::kNestedBlock;
      state["nested_dtype"] = "float32";
      state["nested_offset"] = q.nested_offset;
    }
    std::string text = state.dump();
    if (text.size() > kQuantStateBytes) throw std::logic_error("bnb quant_state longer than its slot");
    text.resize(kQuantStateBytes, ' ');
    w.write_next({reinterpret_cast<const uint8_t*>(text.data()), text.size()});

    TensorReport tr;
    tr.name = t.name;
    tr.shape = t.shape;
    tr.format = o.name();
    tr.method = report.method;
    tr.bits_per_weight = nf4_bits_per_weight(x.size(), o);
    std::vector<float> y(x.size());
    dequantize_nf4(q, o, y.data());
    tr.error.add(x.data(), y.data(), x.size());
    tr.input_bytes = src.size();
    tr.output_bytes = static_cast<uint64_t>(tr.bits_per_weight * static_cast<double>(x.size()) / 8.0);
    tr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    report.input_bytes += src.size();
    report.tensor_bytes += tr.output_bytes;
    report.weights += x.size();
    report.tensors.push_back(std::move(tr));
  }
  w.finish();
  out.commit();

  nlohmann::ordered_json config = *ckpt.config();
  config["quantization_config"] = {
      {"quant_method", "bitsandbytes"},      {"load_in_4bit", true},
      {"load_in_8bit", false},               {"bnb_4bit_quant_type", quant_type},
      {"bnb_4bit_use_double_quant", o.double_quant}, {"bnb_4bit_compute_dtype", torch_dtype(compute)},
      {"bnb_4bit_quant_storage", "uint8"},   {"llm_int8_threshold", 6.0},
      {"llm_int8_has_fp16_weight", false},   {"llm_int8_skip_modules", nullptr},
  };
  write_text_file(out_dir / "config.json", config.dump(2) + "\n", true);
  copy_tokenizer_files(fs::is_directory(ckpt.source()) ? ckpt.source() : ckpt.source().parent_path(), out_dir);
  report.output_bytes = fs::file_size(out_dir / "model.safetensors");
  report.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.peak_memory_bytes = peak_memory_bytes();
  report.threads = 1;
  return report;
}

}  // namespace qz
