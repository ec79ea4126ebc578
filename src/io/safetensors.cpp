#include "qz/io/safetensors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "qz/core/error.hpp"

namespace qz {

namespace fs = std::filesystem;
using nlohmann::json;

uint64_t SafetensorsTensor::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

namespace {

uint64_t read_u64le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses the header JSON, rejecting duplicate top-level keys (which a plain parse silently merges).
json parse_header(const std::string& file, const char* begin, const char* end) {
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, cb);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: invalid JSON header: {}", file, e.what()));
  }
  if (!duplicate.empty()) throw InputError(fmt::format("{}: duplicate tensor name '{}' in header", file, duplicate));
  if (!header.is_object()) throw InputError(fmt::format("{}: JSON header is not an object", file));
  return header;
}

uint64_t get_offset(const std::string& file, const std::string& name, const json& v) {
  if (!v.is_number_unsigned())
    throw InputError(fmt::format("{}: tensor '{}': data_offsets must be two non-negative integers", file, name));
  return v.get<uint64_t>();
}

}  // namespace

SafetensorsFile::SafetensorsFile(const fs::path& path) : map_(path) {
  const std::string file = path.string();
  const auto bytes = map_.bytes();
  if (bytes.size() < 8)
    throw InputError(fmt::format("{}: truncated: {} bytes, shorter than the 8-byte header length", file, bytes.size()));
  const uint64_t header_len = read_u64le(bytes.data());
  if (header_len > kSafetensorsMaxHeader)
    throw InputError(fmt::format("{}: header length {} exceeds the {} byte limit", file, header_len,
                                 kSafetensorsMaxHeader));
  if (header_len > bytes.size() - 8)
    throw InputError(fmt::format("{}: truncated: header length {} runs past the end of the {}-byte file", file,
                                 header_len, bytes.size()));
  data_start_ = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_start_;
  const auto* hb = reinterpret_cast<const char*>(bytes.data() + 8);
  const json header = parse_header(file, hb, hb + header_len);

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw InputError(fmt::format("{}: __metadata__ is not an object", file));
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw InputError(fmt::format("{}: __metadata__ value of '{}' is not a string", file, m.key()));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (name.empty()) throw InputError(fmt::format("{}: a tensor has an empty name", file));
    if (!v.is_object()) throw InputError(fmt::format("{}: tensor '{}': entry is not an object", file, name));
    SafetensorsTensor t;
    t.name = name;
    const auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string())
      throw InputError(fmt::format("{}: tensor '{}': missing or non-string dtype", file, name));
    const auto parsed = parse_dtype(dt->get<std::string>());
    if (!parsed)
      throw InputError(fmt::format("{}: tensor '{}': unknown dtype '{}'", file, name, dt->get<std::string>()));
    t.dtype = *parsed;
    const auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array())
      throw InputError(fmt::format("{}: tensor '{}': missing or non-array shape", file, name));
    const uint64_t esize = dtype_size(t.dtype);
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned())
        throw InputError(fmt::format("{}: tensor '{}': shape has a non-integer or negative dimension", file, name));
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / esize / dim)
        throw InputError(fmt::format("{}: tensor '{}': shape {} overflows the size computation", file, name,
                                     sh->dump()));
      numel *= dim;
      t.shape.push_back(dim);
    }
    const auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      throw InputError(fmt::format("{}: tensor '{}': data_offsets must be an array [begin, end]", file, name));
    t.begin = get_offset(file, name, (*off)[0]);
    t.end = get_offset(file, name, (*off)[1]);
    if (t.begin > t.end)
      throw InputError(fmt::format("{}: tensor '{}': data_offsets [{}, {}] end before they begin", file, name,
                                   t.begin, t.end));
    if (t.end > data_size)
      throw InputError(fmt::format("{}: tensor '{}': data_offsets [{}, {}] out of bounds (data section is {} bytes): "
                                   "the file is truncated or its header is wrong",
                                   file, name, t.begin, t.end, data_size));
    if (t.end - t.begin != numel * esize)
      throw InputError(fmt::format("{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets span {}", file,
                                   name, sh->dump(), dtype_name(t.dtype), numel * esize, t.end - t.begin));
    tensors_.push_back(std::move(t));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  const SafetensorsTensor* prev = nullptr;
  for (const auto& t : tensors_) {
    if (t.begin < expect)
      throw InputError(fmt::format("{}: tensors '{}' and '{}' overlap (bytes {}..{} and {}..{})", file, prev->name,
                                   t.name, prev->begin, prev->end, t.begin, t.end));
    if (t.begin > expect)
      throw InputError(fmt::format("{}: data is not contiguous: {} unused bytes before tensor '{}'", file,
                                   t.begin - expect, t.name));
    expect = t.end;
    prev = &t;
  }
  if (expect != data_size)
    throw InputError(fmt::format("{}: {} trailing bytes after the last tensor's data", file, data_size - expect));
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_.emplace(tensors_[i].name, i);
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

std::span<const uint8_t> SafetensorsFile::data(const SafetensorsTensor& t) const {
  return map_.bytes().subspan(data_start_ + t.begin, t.end - t.begin);
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

SafetensorsShardWriter::SafetensorsShardWriter(const fs::path& dir, const std::vector<SafetensorsWriter::Decl>& tensors,
                                               uint64_t max_bytes, bool overwrite,
                                               const std::map<std::string, std::string>& metadata)
    : dir_(dir), overwrite_(overwrite) {
  std::vector<std::vector<SafetensorsWriter::Decl>> shards(1);
  uint64_t in_shard = 0;
  for (const auto& d : tensors) {
    uint64_t n = dtype_size(d.dtype);
    for (auto x : d.shape) n *= x;
    if (max_bytes && !shards.back().empty() && in_shard + n > max_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(d);
    shard_of_.push_back(shards.size() - 1);
    in_shard += n;
    total_ += n;
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name =
        shards.size() == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    for (const auto& d : shards[i]) weight_map_[d.name] = name;
    files_.push_back(std::make_unique<OutputFile>(dir / name, overwrite));
    writers_.push_back(std::make_unique<SafetensorsWriter>(*files_.back(), shards[i], metadata));
  }
}

void SafetensorsShardWriter::write_next(std::span<const uint8_t> bytes) {
  if (next_ >= shard_of_.size()) throw std::logic_error("SafetensorsShardWriter: more tensors written than declared");
  writers_[shard_of_[next_++]]->write_next(bytes);
}

void SafetensorsShardWriter::commit() {
  for (const auto& w : writers_) w->finish();
  if (writers_.size() > 1) {
    nlohmann::ordered_json index = {{"metadata", {{"total_size", total_}}}, {"weight_map", weight_map_}};
    write_text_file(dir_ / "model.safetensors.index.json", index.dump(2) + "\n", overwrite_);
  }
  for (const auto& f : files_) f->commit();
}

uint64_t SafetensorsShardWriter::bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_) n += f->position();
  return n;
}

SafetensorsWriter::SafetensorsWriter(OutputFile& out, std::vector<Decl> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : out_(out), decls_(std::move(tensors)) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& d : decls_) {
    uint64_t n = dtype_size(d.dtype);
    for (auto s : d.shape) n *= s;
    header[d.name] = {{"dtype", std::string(dtype_name(d.dtype))}, {"shape", d.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  uint8_t len[8];
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  out_.write(len, 8);
  out_.write(text.data(), text.size());
}

void SafetensorsWriter::write_next(std::span<const uint8_t> bytes) {
  if (next_ >= decls_.size()) throw std::logic_error("SafetensorsWriter: more tensors written than declared");
  const auto& d = decls_[next_];
  uint64_t n = dtype_size(d.dtype);
  for (auto s : d.shape) n *= s;
  if (bytes.size() != n)
    throw std::logic_error(fmt::format("SafetensorsWriter: tensor '{}' declared {} bytes, got {}", d.name, n,
                                       bytes.size()));
  out_.write(bytes);
  ++next_;
}

void SafetensorsWriter::finish() const {
  if (next_ != decls_.size()) throw std::logic_error("SafetensorsWriter: not every declared tensor was written");
}

void write_safetensors(const fs::path& path, const std::vector<SafetensorsBlob>& tensors,
                       const std::map<std::string, std::string>& metadata, bool overwrite) {
  OutputFile out(path, overwrite);
  std::vector<SafetensorsWriter::Decl> decls;
  for (const auto& t : tensors) decls.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter w(out, decls, metadata);
  for (const auto& t : tensors) w.write_next(t.bytes);
  w.finish();
  out.commit();
}

}  // namespace qz
