// `quantize batch RECIPE.json`: many outputs of many models, resumable, shardable across machines, with quality gates.
//
// A recipe (docs/batch.md) lists models and, per model, the outputs to make; every setting is an option of the main
// command spelled as a JSON key (group_size for --group-size). The recipe's structure is read here; turning one
// output's settings into a QuantizeJob is the caller's (the CLI parses them with the main command's own options).
//
// The manifest (OUTPUT_DIR/quantize-manifest.json, or quantize-manifest-I-of-N.json for shard I of N) records per
// output its settings, the inputs' sizes and modification times, the output's size and sha256, its report and its
// gate figures. A rerun skips an output whose record says it finished with the same settings and inputs and whose
// file is still there as recorded; everything else is made again. Outputs are written through a temporary file and
// renamed, and the manifest is rewritten (the same way) after each output, so an interrupted batch rerun finishes the
// job. `--shard I/N` takes every N-th output (recipe order) starting at the I-th; `--merge` joins the shards'
// manifests into quantize-manifest.json.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/quality_gates.hpp"

namespace qz {

// One output as the recipe states it.
struct RecipeOutput {
  std::string model_name;
  std::filesystem::path model;  // resolved against the recipe's directory
  std::string where;            // its place in the recipe, e.g. "recipe.json: models[1].outputs[0]"
  std::string id;               // the output's file name in the output directory (unique in the recipe)
  nlohmann::json settings;      // defaults, then the model's, then the output's own: options of the main command
  std::optional<std::filesystem::path> imatrix_calib;  // imatrix_calib: one imatrix per model from this file, shared
};

struct Recipe {
  std::filesystem::path file, output_dir;
  std::vector<RecipeOutput> outputs;  // recipe order
};

// Reads and checks the recipe's structure; settings keys are checked by `is_setting` (an option of the main command).
// Throws UsageError naming the recipe, the key and its place.
Recipe read_recipe(const std::filesystem::path& file, const std::function<bool(const std::string& key)>& is_setting);

// "I/N" -> {I, N}, 1 <= I <= N.
std::pair<size_t, size_t> parse_shard(const std::string& s);

// One output ready to run: its job (inputs and output set) and gates.
struct BatchOutput {
  RecipeOutput recipe;
  QuantizeJob job;
  QualityGates gates;
};

struct BatchOptions {
  size_t shard = 1, shards = 1;
  bool dry_run = false;
  unsigned threads = 0;
};

struct BatchResult {
  std::string id, model_name, status;  // done, gate_failed, error, or planned (a dry run's outputs to make)
  bool up_to_date = false;             // skipped: the manifest's record still holds (its status is the record's)
  std::string reason;                  // why it was (re)made or skipped; the error or the failed gates
  nlohmann::json record;               // the manifest record (report, quality, sha256 ...)
  double seconds = 0;
};

struct BatchEvents {
  std::function<void(const BatchOutput&, size_t index, size_t count)> starting;
  std::function<void(const BatchResult&)> finished;
  std::function<void(const std::string&)> warn;
  QuantizeEvents quantize;  // passed to each output's run
};

std::filesystem::path manifest_path(const std::filesystem::path& output_dir, size_t shard, size_t shards);

// Runs this shard's outputs (those of `outputs` at index i with i % shards == shard - 1).
std::vector<BatchResult> run_batch(const Recipe& recipe, const std::vector<BatchOutput>& outputs, const BatchOptions& o,
                                   const BatchEvents& ev);

// Joins quantize-manifest-*-of-*.json in the output directory into quantize-manifest.json; returns the record count.
size_t merge_manifests(const std::filesystem::path& output_dir);

// The batch's JSON report and its JUnit XML (one test case per output; a failed gate is a failure, an error an error).
nlohmann::json batch_report(const Recipe& recipe, const BatchOptions& o, const std::vector<BatchResult>& results);
std::string junit_xml(const Recipe& recipe, const std::vector<BatchResult>& results);

// 0 when every output is done or up to date; 2 when any failed with an error; else 3 when a gate failed.
int batch_exit_code(const std::vector<BatchResult>& results);

}  // namespace qz
