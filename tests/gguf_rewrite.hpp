// For tests that need a variant of a GGUF file this tool wrote: the same tensors, the metadata passed through
// `copy` (which sets what it keeps, changed or not, on the writer), then `add` for new keys.
#pragma once

#include <filesystem>
#include <functional>

#include "qz/io/gguf.hpp"
#include "qz/io/output_file.hpp"

namespace qz::test {

inline void rewrite_gguf(const std::filesystem::path& in_path, const std::filesystem::path& out_path,
                         const std::function<void(const GgufKv&, GgufWriter&)>& copy,
                         const std::function<void(GgufWriter&)>& add = {}) {
  const GgufFile in(in_path, GgufFile::kThisFileOnly);
  GgufWriter w;
  for (const auto& kv : in.metadata()) copy(kv, w);
  if (add) add(w);
  for (const auto& t : in.tensors()) w.add_tensor(t.name, t.ne, t.type);
  OutputFile out(out_path, true);
  w.write_header(out);
  for (const auto& t : in.tensors()) w.write_tensor_data(out, in.data(t));
  w.finish();
  out.commit();
}

}  // namespace qz::test
