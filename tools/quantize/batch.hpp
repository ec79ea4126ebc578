// `quantize batch RECIPE.json`: the recipe's outputs, each parsed with the main command's own options
// (qz/pipeline/batch.hpp runs them).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace qz::cli {

struct BatchArgs {
  std::string recipe, shard = "1/1", json, junit;
  bool dry_run = false, merge = false;
  unsigned threads = 0;
};

void add_batch_options(CLI::App& sub, BatchArgs& a);
int handle_batch(const BatchArgs& a, bool quiet);

}  // namespace qz::cli
