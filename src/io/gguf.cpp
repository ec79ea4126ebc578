#include "qz/io/gguf.hpp"
#include "qz/io/gguf_split_name.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <limits>
#include <set>
#include <stdexcept>

#include "qz/core/error.hpp"

namespace qz {

namespace {

constexpr uint32_t kMaxDims = 4;

uint64_t pad_to(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

std::string_view kTypeNames[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                 "u64", "i64", "f64"};

// ---- serialization ----
class Buffer {
 public:
  template <typename T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    append(&v, sizeof(T));
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    append(s.data(), s.size());
  }
  void append(const void* p, size_t n) {
    const size_t at = bytes.size();
    bytes.resize(at + n);
    if (n > 0) std::memcpy(bytes.data() + at, p, n);
  }
  std::vector<uint8_t> bytes;
};

void put_value(Buffer& b, const GgufValue& v);

void put_scalar(Buffer& b, const GgufValue& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          b.put_string(x);
        } else if constexpr (std::is_same_v<T, bool>) {
          b.put<uint8_t>(x ? 1 : 0);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          b.put<int32_t>(static_cast<int32_t>(x.element_type));
          b.put<uint64_t>(x.items.size());
          for (const auto& item : x.items) {
            if (item.type() != x.element_type || item.type() == GgufType::ARRAY)
              throw std::logic_error("GGUF array holds an item of another type or a nested array");
            put_scalar(b, item);
          }
        } else {
          b.put<T>(x);
        }
      },
      v.v);
}

void put_value(Buffer& b, const GgufValue& v) {
  b.put<int32_t>(static_cast<int32_t>(v.type()));
  put_scalar(b, v);
}

// ---- parsing ----
class Cursor {
 public:
  Cursor(std::span<const uint8_t> data, std::string file) : data_(data), file_(std::move(file)) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string get_string(const char* what) {
    const uint64_t n = get<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  void need(uint64_t n, const char* what) const {
    if (n > data_.size() - pos_)
      throw InputError(fmt::format("{}: truncated: {} needs {} bytes at offset {}, file has {}", file_, what, n, pos_,
                                   data_.size()));
  }
  uint64_t remaining() const { return data_.size() - pos_; }
  uint64_t pos() const { return pos_; }
  const std::string& file() const { return file_; }

 private:
  std::span<const uint8_t> data_;
  uint64_t pos_ = 0;
  std::string file_;
};

size_t min_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 12;
  }
  return 1;
}

GgufValue get_scalar(Cursor& c, GgufType t, const std::string& key) {
  switch (t) {
    case GgufType::U8: return c.get<uint8_t>("value");
    case GgufType::I8: return c.get<int8_t>("value");
    case GgufType::U16: return c.get<uint16_t>("value");
    case GgufType::I16: return c.get<int16_t>("value");
    case GgufType::U32: return c.get<uint32_t>("value");
    case GgufType::I32: return c.get<int32_t>("value");
    case GgufType::F32: return c.get<float>("value");
    case GgufType::U64: return c.get<uint64_t>("value");
    case GgufType::I64: return c.get<int64_t>("value");
    case GgufType::F64: return c.get<double>("value");
    case GgufType::BOOL: {
      const uint8_t b = c.get<uint8_t>("value");
      if (b > 1) throw InputError(fmt::format("{}: key '{}': bool value {} is not 0 or 1", c.file(), key, b));
      return b == 1;
    }
    case GgufType::STRING: return c.get_string("string value");
    case GgufType::ARRAY: break;
  }
  throw InputError(fmt::format("{}: key '{}': unexpected value type", c.file(), key));
}

GgufType get_type(Cursor& c, const std::string& key) {
  const int32_t t = c.get<int32_t>("value type");
  if (t < 0 || t > static_cast<int32_t>(GgufType::F64))
    throw InputError(fmt::format("{}: key '{}': unknown value type {}", c.file(), key, t));
  return static_cast<GgufType>(t);
}

GgufValue get_value(Cursor& c, const std::string& key) {
  const GgufType t = get_type(c, key);
  if (t != GgufType::ARRAY) return get_scalar(c, t, key);
  GgufArray a;
  a.element_type = get_type(c, key);
  if (a.element_type == GgufType::ARRAY)
    throw InputError(fmt::format("{}: key '{}': nested arrays are not allowed", c.file(), key));
  const uint64_t n = c.get<uint64_t>("array length");
  if (n > c.remaining() / min_size(a.element_type))
    throw InputError(fmt::format("{}: key '{}': array of {} elements runs past the end of the file", c.file(), key, n));
  a.items.reserve(n);
  for (uint64_t i = 0; i < n; ++i) a.items.push_back(get_scalar(c, a.element_type, key));
  return a;
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  const auto i = static_cast<size_t>(t);
  return i < std::size(kTypeNames) ? kTypeNames[i] : "?";
}

GgufValue GgufValue::strings(std::vector<std::string> items) {
  GgufArray a;
  a.element_type = GgufType::STRING;
  a.items.reserve(items.size());
  for (auto& s : items) a.items.emplace_back(std::move(s));
  return GgufValue(std::move(a));
}

std::string GgufValue::to_string(size_t max_items) const {
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          std::string s = x.size() > 80 ? x.substr(0, 77) + "..." : x;
          for (auto& ch : s)
            if (ch == '\n') ch = ' ';
          return fmt::format("\"{}\"", s);
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          std::string s = fmt::format("[{} x {}: ", x.items.size(), gguf_type_name(x.element_type));
          for (size_t i = 0; i < x.items.size() && i < max_items; ++i) s += (i ? ", " : "") + x.items[i].to_string();
          if (x.items.size() > max_items) s += ", ...";
          return s + "]";
        } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
          return fmt::format("{}", static_cast<int>(x));
        } else {
          return fmt::format("{}", x);
        }
      },
      v);
}

uint64_t ggml_tensor_nbytes(GgmlType type, std::span<const uint64_t> ne) {
  const auto& tr = ggml_type_traits(type);
  if (ne.empty() || ne[0] % tr.block_size != 0)
    throw std::invalid_argument(fmt::format("row length is not a multiple of the {} block size {}", tr.name,
                                            tr.block_size));
  // Checked: sizes come from files (a GGUF's dimensions), and a product that wraps would pass every later check.
  uint64_t bytes = (ne[0] / tr.block_size);
  if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(tr.type_size), &bytes))
    throw std::overflow_error("tensor byte size overflows 64 bits");
  for (size_t i = 1; i < ne.size(); ++i)
    if (__builtin_mul_overflow(bytes, ne[i], &bytes)) throw std::overflow_error("tensor byte size overflows 64 bits");
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw UsageError(fmt::format("GGUF alignment {} is not a power of two", alignment));
  if (alignment != kGgufDefaultAlignment) kv_.push_back({"general.alignment", GgufValue(alignment)});
}

void GgufWriter::set(std::string key, GgufValue value) {
  if (header_written_) throw std::logic_error("GgufWriter::set after write_header");
  if (key == "general.alignment") throw std::logic_error("general.alignment is set through the constructor");
  for (auto& kv : kv_) {
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  }
  kv_.push_back({std::move(key), std::move(value)});
}

size_t GgufWriter::add_tensor(std::string name, std::vector<uint64_t> ne, GgmlType type) {
  if (header_written_) throw std::logic_error("GgufWriter::add_tensor after write_header");
  if (name.empty() || name.size() > kGgufMaxNameLength)
    throw UsageError(fmt::format("tensor name '{}' must be 1..{} bytes for GGUF", name, kGgufMaxNameLength));
  for (const auto& t : tensors_)
    if (t.name == name) throw UsageError(fmt::format("tensor '{}' declared twice", name));
  if (ne.empty() || ne.size() > kMaxDims)
    throw UsageError(fmt::format("tensor '{}': {} dimensions (GGUF allows 1..4)", name, ne.size()));
  GgufTensorInfo t;
  try {
    t.nbytes = ggml_tensor_nbytes(type, ne);
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("tensor '{}': {}", name, e.what()));
  }
  t.name = std::move(name);
  t.ne = std::move(ne);
  t.type = type;
  t.offset = data_bytes_;
  data_bytes_ += pad_to(t.nbytes, alignment_);
  tensors_.push_back(std::move(t));
  return tensors_.size() - 1;
}

uint64_t GgufWriter::header_bytes() const {
  uint64_t n = 4 + 4 + 8 + 8;
  for (const auto& kv : kv_) {
    Buffer b;
    put_value(b, kv.value);
    n += 8 + kv.key.size() + b.bytes.size();
  }
  for (const auto& t : tensors_) n += 8 + t.name.size() + 4 + 8 * t.ne.size() + 4 + 8;
  return pad_to(n, alignment_);
}

uint64_t GgufWriter::file_bytes() const { return header_bytes() + data_bytes_; }

void GgufWriter::write_header(OutputFile& out) {
  if (header_written_) throw std::logic_error("GgufWriter::write_header called twice");
  Buffer b;
  b.append("GGUF", 4);
  b.put<uint32_t>(3);
  b.put<int64_t>(static_cast<int64_t>(tensors_.size()));
  b.put<int64_t>(static_cast<int64_t>(kv_.size()));
  for (const auto& kv : kv_) {
    b.put_string(kv.key);
    put_value(b, kv.value);
  }
  for (const auto& t : tensors_) {
    b.put_string(t.name);
    b.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) b.put<int64_t>(static_cast<int64_t>(d));
    b.put<int32_t>(static_cast<int32_t>(t.type));
    b.put<uint64_t>(t.offset);
  }
  b.bytes.resize(pad_to(b.bytes.size(), alignment_), 0);
  out.write(b.bytes.data(), b.bytes.size());
  header_written_ = true;
}

void GgufWriter::write_tensor_data(OutputFile& out, std::span<const uint8_t> bytes) {
  if (!header_written_) throw std::logic_error("GgufWriter: tensor data before the header");
  if (next_ >= tensors_.size()) throw std::logic_error("GgufWriter: more tensor data than declared tensors");
  const auto& t = tensors_[next_];
  if (bytes.size() != t.nbytes)
    throw std::logic_error(fmt::format("GgufWriter: tensor '{}' declared {} bytes, got {}", t.name, t.nbytes,
                                       bytes.size()));
  out.write(bytes);
  out.write_zeros(pad_to(t.nbytes, alignment_) - t.nbytes);
  ++next_;
}

void GgufWriter::finish() const {
  if (next_ != tensors_.size()) throw std::logic_error("GgufWriter: not every declared tensor was written");
}

// ---------------------------------------------------------------------------------------------------------------
// Reader

GgufFile::GgufFile(const std::filesystem::path& path, bool whole_split) : map_(path) {
  const std::string file = path.string();
  Cursor c(map_.bytes(), file);
  c.need(4, "magic");
  if (std::memcmp(map_.bytes().data(), "GGUF", 4) != 0) throw InputError(file + ": not a GGUF file (bad magic)");
  c.get<uint32_t>("magic");
  version_ = c.get<uint32_t>("version");
  if (version_ < 2 || version_ > 3)
    throw InputError(fmt::format("{}: unsupported GGUF version {} (2 and 3 are read)", file, version_));
  const int64_t n_tensors = c.get<int64_t>("tensor count");
  const int64_t n_kv = c.get<int64_t>("metadata count");
  if (n_tensors < 0 || static_cast<uint64_t>(n_tensors) > c.remaining() / 28)
    throw InputError(fmt::format("{}: tensor count {} is impossible for the file size", file, n_tensors));
  if (n_kv < 0 || static_cast<uint64_t>(n_kv) > c.remaining() / 12)
    throw InputError(fmt::format("{}: metadata count {} is impossible for the file size", file, n_kv));

  std::set<std::string> keys;
  for (int64_t i = 0; i < n_kv; ++i) {
    std::string key = c.get_string("metadata key");
    if (!keys.insert(key).second) throw InputError(fmt::format("{}: duplicate metadata key '{}'", file, key));
    GgufValue v = get_value(c, key);
    kv_.push_back({std::move(key), std::move(v)});
  }
  if (const GgufValue* a = find("general.alignment")) {
    const auto* u = a->get_if<uint32_t>();
    if (u == nullptr)
      throw InputError(fmt::format("{}: general.alignment has type {}, must be u32", file, gguf_type_name(a->type())));
    if (*u == 0 || (*u & (*u - 1)) != 0)
      throw InputError(fmt::format("{}: general.alignment {} is not a power of two", file, *u));
    alignment_ = *u;
  }

  std::set<std::string> names;
  uint64_t expect_offset = 0;
  for (int64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.get_string("tensor name");
    if (t.name.size() > kGgufMaxNameLength)
      throw InputError(fmt::format("{}: tensor name '{}' is longer than {} bytes", file, t.name, kGgufMaxNameLength));
    if (!names.insert(t.name).second) throw InputError(fmt::format("{}: duplicate tensor '{}'", file, t.name));
    const uint32_t n_dims = c.get<uint32_t>("tensor dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      throw InputError(fmt::format("{}: tensor '{}': {} dimensions (1..4 allowed)", file, t.name, n_dims));
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const int64_t ne = c.get<int64_t>("tensor dimension");
      if (ne < 0) throw InputError(fmt::format("{}: tensor '{}': negative dimension {}", file, t.name, ne));
      if (ne != 0 && numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(ne))
        throw InputError(fmt::format("{}: tensor '{}': dimensions overflow", file, t.name));
      numel *= static_cast<uint64_t>(ne);
      t.ne.push_back(static_cast<uint64_t>(ne));
    }
    const uint32_t type_id = c.get<uint32_t>("tensor type");
    const auto traits = ggml_type_traits(type_id);
    if (!traits) throw InputError(fmt::format("{}: tensor '{}': unknown ggml type {}", file, t.name, type_id));
    t.type = traits->type;
    if (t.ne[0] % traits->block_size != 0)
      throw InputError(fmt::format("{}: tensor '{}': row length {} is not a multiple of the {} block size {}", file,
                                   t.name, t.ne[0], traits->name, traits->block_size));
    try {
      t.nbytes = ggml_tensor_nbytes(t.type, t.ne);
    } catch (const std::overflow_error&) {
      throw InputError(fmt::format("{}: tensor '{}': shape [{}] of {} has more bytes than 64 bits count", file, t.name,
                                   fmt::join(t.ne, ", "), traits->name));
    }
    if (t.nbytes > map_.size())
      throw InputError(fmt::format("{}: truncated or malformed: tensor '{}' of shape [{}] ({}) needs {} bytes but the file has {}", file, t.name,
                                   fmt::join(t.ne, ", "), traits->name, t.nbytes, map_.size()));
    t.offset = c.get<uint64_t>("tensor offset");
    if (t.offset > map_.size())
      throw InputError(fmt::format("{}: tensor '{}': offset {} is beyond the file's {} bytes", file, t.name, t.offset,
                                   map_.size()));
    if (t.offset % alignment_ != 0)
      throw InputError(fmt::format("{}: tensor '{}': offset {} is not aligned to {}", file, t.name, t.offset,
                                   alignment_));
    if (t.offset != expect_offset)
      throw InputError(fmt::format("{}: tensor '{}': offset {} where {} was expected (data must follow the tensor "
                                   "table's order, each tensor padded to the alignment)",
                                   file, t.name, t.offset, expect_offset));
    expect_offset = pad_to(t.offset + t.nbytes, alignment_);
    tensors_.push_back(std::move(t));
  }
  data_offset_ = pad_to(c.pos(), alignment_);
  for (const auto& t : tensors_) {
    if (data_offset_ + t.offset + t.nbytes > map_.size())
      throw InputError(fmt::format("{}: truncated: tensor '{}' data ends at byte {} but the file has {}", file,
                                   t.name, data_offset_ + t.offset + t.nbytes, map_.size()));
  }
  if (whole_split) add_split_parts();
}

namespace {

// split.no / split.count / split.tensors.count as gguf-split writes them (u16 / u16 / i32), 0 where absent.
uint32_t split_key(const GgufFile& g, const char* key) {
  const GgufValue* v = g.find(key);
  if (v == nullptr) return 0;
  if (const auto* u16 = v->get_if<uint16_t>()) return *u16;
  if (const auto* u32 = v->get_if<uint32_t>()) return *u32;
  if (const auto* i32 = v->get_if<int32_t>()) return *i32 > 0 ? static_cast<uint32_t>(*i32) : 0;
  return 0;
}

// The files of the set whose first part is `first`, from its metadata and name, without opening the others.
std::vector<std::filesystem::path> split_part_paths(const GgufFile& first) {
  const std::filesystem::path& path = first.path();
  const uint32_t count = split_key(first, "split.count");
  if (count <= 1) return {path};
  const std::optional<GgufSplitName> name = parse_gguf_split_name(path);
  if (!name || name->count != count)
    throw InputError(fmt::format("{}: split.count is {}, but the file name is not PREFIX-NNNNN-of-{:05d}.gguf, so its "
                                 "other parts cannot be found",
                                 path.string(), count, count));
  if (split_key(first, "split.no") != 0 || name->part != 1)
    throw InputError(fmt::format("{}: this is part {} of a split GGUF: give its first part ({})", path.string(),
                                 split_key(first, "split.no") + 1, gguf_split_path(name->prefix, 0, count).string()));
  std::vector<std::filesystem::path> parts = {path};
  for (uint32_t i = 1; i < count; ++i) {
    const std::filesystem::path part = gguf_split_path(name->prefix, i, count);
    std::error_code ec;
    if (!std::filesystem::exists(part, ec))
      throw InputError(fmt::format("{}: part {} of {} of this split GGUF is missing ({})", path.string(), i + 1, count,
                                   part.string()));
    parts.push_back(part);
  }
  return parts;
}

void check_split_part(const GgufFile& part, uint32_t i, uint32_t count) {
  if (split_key(part, "split.no") != i || split_key(part, "split.count") != count)
    throw InputError(fmt::format("{}: split.no / split.count say part {} of {}, not part {} of {}", part.path().string(),
                                 split_key(part, "split.no") + 1, split_key(part, "split.count"), i + 1, count));
}

}  // namespace

void GgufFile::add_split_parts() {
  const std::vector<std::filesystem::path> files = split_part_paths(*this);
  if (files.size() <= 1) return;
  for (size_t p = 1; p < files.size(); ++p) {
    parts_.push_back(std::make_unique<GgufFile>(files[p], kThisFileOnly));
    check_split_part(*parts_.back(), static_cast<uint32_t>(p), static_cast<uint32_t>(files.size()));
    for (GgufTensorInfo t : parts_.back()->tensors()) {
      if (find_tensor(t.name) != nullptr)
        throw InputError(fmt::format("{}: tensor '{}' is in two parts of the split GGUF", files[p].string(), t.name));
      t.part = static_cast<uint32_t>(p);
      tensors_.push_back(std::move(t));
    }
  }
  const GgufValue* n = find("split.tensors.count");
  const int32_t* count = n ? n->get_if<int32_t>() : nullptr;
  if (count == nullptr || static_cast<size_t>(*count) != tensors_.size())
    throw InputError(fmt::format("{}: split.tensors.count says {} tensors, but the {} parts hold {}", path().string(),
                                 count ? std::to_string(*count) : "(missing)", files.size(), tensors_.size()));
}

std::vector<std::filesystem::path> GgufFile::paths() const {
  std::vector<std::filesystem::path> out = {path()};
  for (const auto& p : parts_) out.push_back(p->path());
  return out;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& kv : kv_)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::span<const uint8_t> GgufFile::data(const GgufTensorInfo& t) const {
  if (t.part != 0) {
    const GgufFile& part = *parts_.at(t.part - 1);
    return part.map_.bytes().subspan(part.data_offset_ + t.offset, t.nbytes);
  }
  return map_.bytes().subspan(data_offset_ + t.offset, t.nbytes);
}

}  // namespace qz
