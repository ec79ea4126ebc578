#include "qz/io/checkpoint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "qz/core/error.hpp"
#include "qz/io/gguf_tensor_file.hpp"

namespace qz {

namespace fs = std::filesystem;
using nlohmann::json;

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

void Checkpoint::add_file(const fs::path& p) {
  if (is_gguf_file(p)) {  // (a split GGUF is read whole by GgufFile)
    auto g = std::make_unique<GgufTensorFile>(p);
    if (gguf_ == nullptr) gguf_ = &g->gguf();
    files_.push_back(std::move(g));
    return;
  }
  files_.push_back(std::make_unique<SafetensorsFile>(p));
}

std::vector<fs::path> Checkpoint::paths() const {
  std::vector<fs::path> out;
  for (const auto& f : files_) {
    if (const auto* g = dynamic_cast<const GgufTensorFile*>(f.get())) {
      const auto parts = g->gguf().paths();
      out.insert(out.end(), parts.begin(), parts.end());
    } else {
      out.push_back(f->path());
    }
  }
  return out;
}

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

}  // namespace qz
