#include "batch.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "print.hpp"
#include "quantize_args.hpp"
#include "qz/core/error.hpp"
#include "qz/pipeline/batch.hpp"

namespace qz::cli {

namespace {

namespace fs = std::filesystem;

std::string option_name(const std::string& key) {
  std::string o = "--" + key;
  std::replace(o.begin(), o.end(), '_', '-');
  return o;
}

bool is_setting(const std::string& key) {
  // The main command's option table, built once.
  static QuantizeArgs args;
  static const auto app = [] {
    auto a = std::make_unique<CLI::App>();
    add_quantize_options(*a, args);
    return a;
  }();
  return key != "input" && app->get_option_no_throw(option_name(key)) != nullptr;
}

// One output's settings as the main command's arguments, parsed by its own options.
BatchOutput to_batch_output(const Recipe& recipe, const RecipeOutput& out) {
  CLI::App app;
  QuantizeArgs a;
  add_quantize_options(app, a);
  std::vector<std::string> args = {out.model.string(), "-o", (recipe.output_dir / out.id).string()};
  for (const auto& [key, value] : out.settings.items()) {
    if (key == "imatrix_calib") continue;
    const std::string name = option_name(key);
    auto text = [](const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
    if (value.is_boolean()) {
      if (value.get<bool>()) args.push_back(name);
      else if (app.get_option_no_throw("--no-" + name.substr(2))) args.push_back("--no-" + name.substr(2));
    } else if (value.is_array()) {
      for (const auto& v : value) args.insert(args.end(), {name, text(v)});
    } else {
      args.insert(args.end(), {name, text(value)});
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes a vector of arguments last first
  try {
    app.parse(args);
    finish_quantize_args(a);
  } catch (const CLI::ParseError& e) {
    throw UsageError(fmt::format("{}: {}", out.where, e.what()));
  } catch (const UsageError& e) {
    throw UsageError(fmt::format("{}: {}", out.where, e.what()));
  }
  return {out, a.job, a.gates};
}

}  // namespace

void add_batch_options(CLI::App& sub, BatchArgs& a) {
  sub.add_option("recipe", a.recipe, "Recipe (JSON): models and their outputs (docs/batch.md)")->required();
  sub.add_option("--shard", a.shard, "I/N: make only every N-th output starting at the I-th (a job array's share)")->capture_default_str();
  sub.add_flag("--dry-run", a.dry_run, "Say what would be made and why; make nothing");
  sub.add_flag("--merge", a.merge, "Join the shards' manifests (quantize-manifest-I-of-N.json) into quantize-manifest.json");
  sub.add_option("--json", a.json, "Write the batch report to FILE ('-': stdout)");
  sub.add_option("--junit", a.junit, "Write JUnit XML (one test case per output) to FILE");
  sub.add_option("-t,--threads", a.threads, "Worker threads for every output (default: all cores)");
}

int handle_batch(const BatchArgs& a, bool quiet) {
  const Recipe recipe = read_recipe(a.recipe, is_setting);
  if (a.merge) {
    const size_t n = merge_manifests(recipe.output_dir);
    if (!quiet) fmt::print("merged {} records into {}\n", n, manifest_path(recipe.output_dir, 1, 1).string());
    return 0;
  }
  BatchOptions o;
  std::tie(o.shard, o.shards) = parse_shard(a.shard);
  o.dry_run = a.dry_run;
  o.threads = a.threads;
  std::vector<BatchOutput> outputs;
  for (const auto& out : recipe.outputs) {
    outputs.push_back(to_batch_output(recipe, out));
    if (a.threads) outputs.back().job.options.threads = a.threads;
  }
  std::FILE* human = a.json == "-" ? stderr : stdout;
  BatchEvents ev;
  ev.quantize.warn = [](const std::string& s) { spdlog::warn("{}", s); };
  ev.starting = [&](const BatchOutput& out, size_t k, size_t n) {
    if (!quiet) fmt::print(human, "[{}/{}] {} -> {}: making it\n", k + 1, n, out.recipe.model_name, out.recipe.id);
  };
  ev.finished = [&](const BatchResult& r) {
    if (quiet && r.status != "error" && r.status != "gate_failed") return;
    const std::string what = r.up_to_date ? "up to date" : r.status;
    fmt::print(human, "{} -> {}: {}{}\n", r.model_name, r.id, what,
               r.reason.empty() || r.reason == what ? "" : " (" + r.reason + ")");
  };
  const auto results = run_batch(recipe, outputs, o, ev);
  const int code = batch_exit_code(results);
  if (!a.json.empty()) write_text(a.json, batch_report(recipe, o, results).dump(2) + "\n");
  if (!a.junit.empty()) write_text(a.junit, junit_xml(recipe, results));
  std::vector<std::string> failed;
  for (const auto& r : results)
    if (r.status == "error" || r.status == "gate_failed") failed.push_back(r.id + " (" + r.status + ")");
  if (!failed.empty()) {
    std::string list;
    for (const auto& f : failed) list += "\n  " + f;
    spdlog::error("{} of {} outputs failed:{}", failed.size(), results.size(), list);
  } else if (!quiet) {
    fmt::print(human, "{} outputs: all done{}\n", results.size(), o.dry_run ? " or planned (dry run)" : "");
  }
  return code;
}

}  // namespace qz::cli
