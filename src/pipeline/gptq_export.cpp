#include "qz/pipeline/gptq_export.hpp"

#include <fmt/format.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "qz/core/error.hpp"
#include "qz/formats/int_grid.hpp"
#include "qz/model/tensor_roles.hpp"
#include "qz/model/tokenizer.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

bool is_block_linear(const std::string& gguf_name) { return qz::is_block_linear(classify_tensor(gguf_name).role); }

// The grid of a planned tensor when the GPTQ layout can hold it.
std::optional<IntGridSpec> packable(const TensorPlan& t) {
  if (!t.source || t.packed || t.shape.size() != 2 || !is_block_linear(t.name)) return std::nullopt;
  const auto spec = parse_int_format_name(t.format->name());
  if (!spec || spec->granularity == Granularity::Tensor) return std::nullopt;
  if (spec->bits != 2 && spec->bits != 3 && spec->bits != 4 && spec->bits != 8) return std::nullopt;
  const size_t b = static_cast<size_t>(spec->bits);
  if (t.cols * b % 32 != 0 || t.rows * b % 32 != 0) return std::nullopt;
  return spec;
}

std::span<const uint8_t> words(const std::vector<uint32_t>& w) {
  return {reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4};
}

void put_bits(std::vector<uint32_t>& w, size_t first, size_t stride, size_t bit, uint32_t v, int bits) {
  const uint64_t x = static_cast<uint64_t>(v) << (bit % 32);
  w[first + (bit / 32) * stride] |= static_cast<uint32_t>(x);
  if (bit % 32 + static_cast<size_t>(bits) > 32) w[first + (bit / 32 + 1) * stride] |= static_cast<uint32_t>(x >> 32);
}

// The qzeros of every packed linear are kept (packed, with the zeros as they are) and written last, at commit():
// only then is it known whether checkpoint_format gptq (zero - 1) can hold them all.
class GptqCheckpointSink final : public TensorSink {
 public:
  GptqCheckpointSink(const Checkpoint& ckpt, const Plan& plan, const fs::path& dir, bool overwrite,
                     std::function<void(const std::string&)> warn)
      : ckpt_(ckpt), plan_(plan), dir_(dir), warn_(std::move(warn)) {
    if (!ckpt.config() || ckpt.gguf())
      throw UsageError("--output-format gptq needs a Hugging Face checkpoint directory with config.json as input");
    const auto target = parse_int_format_name(plan.config.target.format_name);
    if (!target || (target->bits != 2 && target->bits != 3 && target->bits != 4 && target->bits != 8) ||
        target->granularity == Granularity::Tensor)
      throw UsageError(fmt::format("--output-format gptq stores integer grids of 2, 3, 4 or 8 bits in groups or per row "
                                   "(--method gptq --bits 4 --group-size 128, ...), not {}",
                                   plan.config.target.name.empty() ? std::string("this target") : plan.config.target.name));
    spec_ = *target;
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec) throw UsageError(dir_.string() + ": cannot create the output directory: " + ec.message());
    std::vector<SafetensorsWriter::Decl> decls, zero_decls;
    for (const auto& t : plan.tensors) {
      if (!t.source) continue;  // (tensors only the GGUF conversion makes)
      const std::string& name = t.source_name();
      if (const auto sp = packable(t)) {
        const size_t b = static_cast<size_t>(sp->bits), groups = sp->granularity == Granularity::Row ? 1 : t.cols / sp->group;
        const std::string base = name.substr(0, name.size() - std::string(".weight").size());
        decls.push_back({base + ".qweight", DType::I32, {t.cols * b / 32, t.rows}});
        decls.push_back({base + ".scales", DType::F16, {groups, t.rows}});
        decls.push_back({base + ".g_idx", DType::I32, {t.cols}});
        zero_decls.push_back({base + ".qzeros", DType::I32, {groups, t.rows * b / 32}});
        continue;
      }
      if (t.shape.size() == 2 && is_block_linear(t.name))
        warn_(fmt::format("{}: not packed into the GPTQ layout ({}): written as the checkpoint has it; loaders that "
                          "expect every linear packed will refuse it",
                          name, t.format->name()));
      decls.push_back({name, t.source->tensor->dtype, t.source->tensor->shape});
    }
    decls.insert(decls.end(), zero_decls.begin(), zero_decls.end());
    writer_ = std::make_unique<SafetensorsShardWriter>(dir_, decls, plan.config.max_shard_bytes, overwrite,
                                                       std::map<std::string, std::string>{{"format", "pt"}});
  }

  void write(const TensorPlan& t, const QuantizedTensor& q) override {
    if (!t.source) return;
    const auto sp = packable(t);
    if (!sp) {
      writer_->write_next(t.source->bytes());
      return;
    }
    const size_t b = static_cast<size_t>(sp->bits), rows = t.rows, cols = t.cols;
    const size_t block = sp->granularity == Granularity::Row ? cols : sp->group, groups = cols / block;
    // Plan row r is checkpoint row row_order[r] (llama.cpp's q/k order): written back in the checkpoint's order.
    std::vector<uint32_t> qweight(cols * b / 32 * rows, 0);
    Zeros z{std::vector<uint32_t>(groups * rows * b / 32, 0), rows * b / 32, sp->bits, groups * rows};
    std::vector<uint16_t> scales(groups * rows), d(groups);
    std::vector<int32_t> codes(cols), zero(groups);
    const size_t rb = t.format->row_bytes(cols);
    for (size_t r = 0; r < rows; ++r) {
      const size_t j = t.row_order.empty() ? r : t.row_order[r];
      read_int_grid_row(*sp, cols, q.parts.front().data() + r * rb, codes.data(), d.data(), zero.data());
      for (size_t i = 0; i < cols; ++i) put_bits(qweight, j, rows, i * b, static_cast<uint32_t>(codes[i]), sp->bits);
      for (size_t g = 0; g < groups; ++g) {
        scales[g * rows + j] = d[g];
        put_bits(z.words, g * z.words_per_row, 1, j * b, static_cast<uint32_t>(zero[g]), sp->bits);
        zero_is_zero_ = zero_is_zero_ || zero[g] == 0;
      }
    }
    std::vector<int32_t> g_idx(cols);
    for (size_t i = 0; i < cols; ++i) g_idx[i] = static_cast<int32_t>(i / block);
    writer_->write_next(words(qweight));
    writer_->write_next({reinterpret_cast<const uint8_t*>(scales.data()), scales.size() * 2});
    writer_->write_next({reinterpret_cast<const uint8_t*>(g_idx.data()), g_idx.size() * 4});
    zeros_.push_back(std::move(z));
  }

  void commit() override {
    const bool v2 = zero_is_zero_;
    if (v2)
      warn_("a group's zero point is 0, which checkpoint_format gptq cannot store (it stores zero - 1): written as "
            "gptq_v2 (zeros as they are), which GPTQModel reads");
    for (auto& z : zeros_) {
      if (!v2) {  // gptq (v1): every zero minus one
        std::vector<uint32_t> v1(z.words.size(), 0);
        const size_t per_row = z.words_per_row * 32 / static_cast<size_t>(z.bits);
        for (size_t k = 0; k < z.count; ++k) {
          const size_t row = k / per_row, col = k % per_row, bit = col * static_cast<size_t>(z.bits);
          uint64_t w = z.words[row * z.words_per_row + bit / 32];
          if (bit % 32 + static_cast<size_t>(z.bits) > 32) w |= static_cast<uint64_t>(z.words[row * z.words_per_row + bit / 32 + 1]) << 32;
          const uint32_t zero = static_cast<uint32_t>((w >> (bit % 32)) & ((1u << z.bits) - 1u));
          put_bits(v1, row * z.words_per_row, 1, bit, zero - 1, z.bits);
        }
        z.words = std::move(v1);
      }
      writer_->write_next(words(z.words));
    }
    writer_->commit();
    const int group = spec_.granularity == Granularity::Row ? -1 : static_cast<int>(spec_.group);
    nlohmann::ordered_json q = {{"bits", spec_.bits},
                                {"group_size", group},
                                {"desc_act", false},
                                {"static_groups", false},
                                {"sym", spec_.symmetric},
                                {"true_sequential", true},
                                {"quant_method", "gptq"},
                                {"checkpoint_format", v2 ? "gptq_v2" : "gptq"}};
    if (plan_.config.gptq) q["damp_percent"] = plan_.config.gptq->config.damp;
    nlohmann::ordered_json config = *ckpt_.config();
    config["quantization_config"] = q;
    write_text_file(dir_ / "config.json", config.dump(2) + "\n", true);
    write_text_file(dir_ / "quantize_config.json", q.dump(2) + "\n", true);
    copy_tokenizer_files(fs::is_directory(ckpt_.source()) ? ckpt_.source() : ckpt_.source().parent_path(), dir_);
  }
  uint64_t bytes() const override { return writer_->bytes(); }
  std::vector<std::string> paths() const override { return {dir_.string()}; }

 private:
  struct Zeros {
    std::vector<uint32_t> words;  // packed as gptq_v2 stores them
    size_t words_per_row;
    int bits;
    size_t count;
  };
  const Checkpoint& ckpt_;
  const Plan& plan_;
  fs::path dir_;
  std::function<void(const std::string&)> warn_;
  IntGridSpec spec_;
  std::unique_ptr<SafetensorsShardWriter> writer_;
  std::vector<Zeros> zeros_;
  bool zero_is_zero_ = false;
};

}  // namespace

std::unique_ptr<TensorSink> make_gptq_checkpoint_sink(const Checkpoint& ckpt, const Plan& plan, const fs::path& out_dir,
                                                      bool overwrite, std::function<void(const std::string&)> warn) {
  return std::make_unique<GptqCheckpointSink>(ckpt, plan, out_dir, overwrite, std::move(warn));
}

}  // namespace qz
