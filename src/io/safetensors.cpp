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
      throw InputError(fmt::format("{}: tensor '{}': data_offsets [{}, {}] out of bounds (data section is {} bytes)",
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
// Checkpoint

namespace {

bool is_safetensors(const fs::path& p) { return p.extension() == ".safetensors"; }

json read_json_file(const fs::path& p) {
  MappedFile m(p);
  const auto* b = reinterpret_cast<const char*>(m.bytes().data());
  try {
    return json::parse(b, b + m.size());
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: invalid JSON: {}", p.string(), e.what()));
  }
}

}  // namespace

void Checkpoint::add_file(const fs::path& p) { files_.push_back(std::make_unique<SafetensorsFile>(p)); }

void Checkpoint::index_entries() {
  for (const auto& f : files_) {
    for (const auto& t : f->tensors()) {
      const auto [it, inserted] = by_name_.emplace(t.name, entries_.size());
      if (!inserted) {
        const auto& first = entries_[it->second];
        throw InputError(fmt::format("tensor '{}' appears twice: in {} and in {}", t.name, first.file->path().string(),
                                     f->path().string()));
      }
      entries_.push_back(Entry{f.get(), &t});
    }
  }
}

Checkpoint Checkpoint::open(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory");
  Checkpoint ck;
  ck.source_ = path;
  if (!fs::is_directory(path, ec)) {
    ck.add_file(path);
    ck.index_entries();
    return ck;
  }
  if (fs::exists(path / "config.json")) ck.config_ = read_json_file(path / "config.json");
  const fs::path index = path / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json_file(index);
    const auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object())
      throw InputError(index.string() + ": missing or non-object \"weight_map\"");
    std::vector<std::string> shards;
    std::map<std::string, std::string> first_tensor_of;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string())
        throw InputError(fmt::format("{}: weight_map entry of '{}' is not a string", index.string(), it.key()));
      const std::string shard = it.value().get<std::string>();
      const fs::path sp(shard);
      if (sp.is_absolute() || sp.has_parent_path() || shard == "." || shard == ".." || shard.empty())
        throw InputError(fmt::format("{}: shard name '{}' (tensor '{}') must be a plain file name", index.string(),
                                     shard, it.key()));
      if (first_tensor_of.emplace(shard, it.key()).second) shards.push_back(shard);
    }
    std::sort(shards.begin(), shards.end());
    for (const auto& s : shards) {
      if (!fs::exists(path / s))
        throw InputError(fmt::format("{}: shard '{}' (holding tensor '{}') is missing", index.string(), s,
                                     first_tensor_of[s]));
      ck.add_file(path / s);
    }
    ck.index_entries();
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      const Entry* e = ck.find(it.key());
      const std::string shard = it.value().get<std::string>();
      if (e == nullptr || e->file->path().filename() != shard)
        throw InputError(fmt::format("{}: tensor '{}' is mapped to shard '{}' which does not contain it",
                                     index.string(), it.key(), shard));
    }
    return ck;
  }
  std::vector<fs::path> files;
  for (const auto& de : fs::directory_iterator(path))
    if (de.is_regular_file() && is_safetensors(de.path())) files.push_back(de.path());
  if (files.empty()) throw InputError(path.string() + ": directory holds no .safetensors file");
  std::sort(files.begin(), files.end());
  for (const auto& f : files) ck.add_file(f);
  ck.index_entries();
  return ck;
}

Checkpoint Checkpoint::open_files(const std::vector<fs::path>& files) {
  if (files.size() == 1) return open(files.front());
  Checkpoint ck;
  if (files.empty()) throw UsageError("no input files given");
  ck.source_ = files.front();
  for (const auto& f : files) ck.add_file(f);
  ck.index_entries();
  return ck;
}

const Checkpoint::Entry* Checkpoint::find(std::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

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
