// llama.cpp importance matrices ("imatrix"): per weight tensor, the sum over calibration tokens of the squared
// input activation of every input column, and the token count.
//
// GGUF form (llama-imatrix's default): general.type = "imatrix", imatrix.datasets (string array),
// imatrix.chunk_count (u32), imatrix.chunk_size (u32); for each weight <name> two F32 tensors:
// <name>.in_sum2 with ne = [n_columns, n_mat] (raw sums of x^2) and <name>.counts with ne = [1, n_mat].
// Legacy .dat form: i32 n_entries; per entry i32 name length, name, i32 ncall, i32 n_values, f32 values
// (mean of x^2 times ncall); optionally i32 last chunk, i32 length, dataset name.
// The importance of a column is in_sum2 / count (legacy: value / ncall); a matrix with count 0 gets 1 everywhere.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace qz {

struct ImatrixTensor {
  std::vector<float> sum2;    // n_columns * n_mat
  std::vector<float> counts;  // n_mat
  size_t columns() const { return counts.empty() ? 0 : sum2.size() / counts.size(); }
  // Per-column importance (sum2 / count), matrix by matrix.
  std::vector<float> importance() const;
};

struct Imatrix {
  std::map<std::string, ImatrixTensor> tensors;  // by the weight's name in the file (GGUF names for llama.cpp)
  std::vector<std::string> datasets;
  uint32_t chunk_count = 0;
  uint32_t chunk_size = 0;
};

// Reads either form (told apart by the GGUF magic). Throws InputError naming the file and what is wrong.
Imatrix read_imatrix(const std::filesystem::path& path);

// Writes the GGUF form (through a temporary file; refuses to replace `path` unless overwrite).
void write_imatrix_gguf(const std::filesystem::path& path, const Imatrix& m, bool overwrite);

}  // namespace qz
