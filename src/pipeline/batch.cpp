#include "qz/pipeline/batch.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "qz/core/error.hpp"
#include "qz/core/sha256.hpp"
#include "qz/io/output_file.hpp"
#include "qz/pipeline/report.hpp"

namespace qz {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Settings that name files (resolved against the recipe's directory).
const std::set<std::string> kPathSettings = {"calib", "imatrix", "eval_text", "imatrix_calib"};
// Options the batch sets itself.
const std::set<std::string> kBatchOwned = {"output", "input", "json", "force", "dry_run"};
const std::set<std::string> kGateKeys = {"max_ppl_increase", "max_kl", "min_top1", "eval_text", "eval_ctx", "eval_chunks"};

json parse_json_file(const fs::path& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) throw UsageError(file.string() + ": cannot read the recipe");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw UsageError(fmt::format("{}: invalid JSON: {}", file.string(), e.what()));
  }
}

// Adds `obj`'s settings (all keys but those in `structural`) to `into`, checking each key and value.
void add_settings(const json& obj, const std::set<std::string>& structural, const std::string& where,
                  const fs::path& base, const std::function<bool(const std::string&)>& is_setting, json& into) {
  for (const auto& [key, value] : obj.items()) {
    if (structural.count(key)) continue;
    const std::string place = where + "." + key;
    if (key == "gates") {
      if (!value.is_object()) throw UsageError(fmt::format("{}: expected an object of gates", place));
      for (const auto& [g, v] : value.items())
        if (!kGateKeys.count(g))
          throw UsageError(fmt::format("{}.{}: unknown gate (gates are max_ppl_increase, max_kl, min_top1, eval_text, "
                                       "eval_ctx, eval_chunks)", place, g));
      add_settings(value, {}, place, base, is_setting, into);
      continue;
    }
    if (kBatchOwned.count(key)) throw UsageError(fmt::format("{}: set by the batch itself; leave it out", place));
    if (key != "imatrix_calib" && !is_setting(key))
      throw UsageError(fmt::format("{}: unknown setting '{}' (the keys are the main command's options: group_size for "
                                   "--group-size)", place, key));
    auto scalar = [](const json& v) { return v.is_string() || v.is_number() || v.is_boolean(); };
    bool ok = scalar(value);
    if (value.is_array()) ok = std::all_of(value.begin(), value.end(), [&](const json& v) { return scalar(v); });
    if (!ok) throw UsageError(fmt::format("{}: expected a string, number, boolean or list of them, not {}", place, value.type_name()));
    json v = value;
    if (kPathSettings.count(key)) {
      auto resolve = [&](json& s) {
        if (!s.is_string()) throw UsageError(fmt::format("{}: expected a file name", place));
        s = (base / s.get<std::string>()).lexically_normal().string();
      };
      if (v.is_array())
        for (auto& s : v) resolve(s);
      else
        resolve(v);
    }
    into[key] = v;
  }
}

std::string default_output_name(const std::string& model, const json& s) {
  std::string what;
  if (s.contains("type")) what = s["type"].is_string() ? s["type"].get<std::string>() : s["type"].dump();
  if (s.contains("method") && s["method"] != "rtn") {
    what = (what.empty() ? "" : what + "-") + s["method"].get<std::string>();
    if (s.contains("bits")) what += fmt::format("-{}bit", s["bits"].dump());
  }
  if (what.empty()) what = "Q8_0";
  const std::string format = s.value("output_format", std::string("gguf"));
  return model + "-" + what + (format == "gguf" ? ".gguf" : "");
}

int64_t mtime_of(const fs::path& p) { return static_cast<int64_t>(fs::last_write_time(p).time_since_epoch().count()); }

// Sizes and modification times of everything made from `model` with `settings` (its files named by path settings).
json fingerprint(const fs::path& model, const json& settings) {
  std::vector<fs::path> files;
  if (fs::is_directory(model)) {
    for (const auto& e : fs::directory_iterator(model))
      if (e.is_regular_file()) files.push_back(e.path());
  } else {
    files.push_back(model);
  }
  for (const auto& key : kPathSettings) {
    if (!settings.contains(key)) continue;
    const json& v = settings[key];
    if (v.is_array())
      for (const auto& s : v) files.emplace_back(s.get<std::string>());
    else
      files.emplace_back(v.get<std::string>());
  }
  std::sort(files.begin(), files.end());
  json j = json::array();
  for (const auto& f : files) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (ec)
      j.push_back({{"path", f.string()}, {"missing", true}});
    else
      j.push_back({{"path", f.string()}, {"size", size}, {"mtime", mtime_of(f)}});
  }
  return j;
}

json file_state(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return nullptr;
  return {{"bytes", fs::file_size(p)}, {"mtime", mtime_of(p)}};
}

json read_manifest(const fs::path& p) {
  if (!fs::exists(p)) return {{"version", 1}, {"records", json::object()}};
  try {
    std::ifstream f(p, std::ios::binary);
    json j = json::parse(f);
    if (!j.is_object() || !j.contains("records") || !j["records"].is_object()) throw InputError("no records");
    return j;
  } catch (const std::exception& e) {
    throw InputError(fmt::format("{}: not a batch manifest ({}); move it away to start afresh", p.string(), e.what()));
  }
}

std::string now_utc() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
}

// Why `record` no longer describes what `out` would make (empty: it still does).
std::string stale_reason(const json* record, const json& settings, const json& inputs, const fs::path& output) {
  if (!record) return "not made yet";
  const std::string status = record->value("status", "");
  if (status != "done" && status != "gate_failed") return "the last run failed";
  if (record->value("settings", json()) != settings) return "its settings changed";
  if (record->value("inputs", json()) != inputs) return "an input changed";
  const json now = file_state(output);
  if (now.is_null() || now["bytes"] != record->value("bytes", json()) || now["mtime"] != record->value("mtime", json()))
    return "the output is missing or was changed";
  return "";
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (const char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

}  // namespace

Recipe read_recipe(const fs::path& file, const std::function<bool(const std::string&)>& is_setting) {
  const json j = parse_json_file(file);
  const std::string f = file.string();
  const fs::path base = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  if (!j.is_object()) throw UsageError(fmt::format("{}: a recipe is a JSON object with \"models\"", f));
  for (const auto& [key, v] : j.items())
    if (key != "output_dir" && key != "defaults" && key != "models")
      throw UsageError(fmt::format("{}: unknown key '{}' at the top level (expected output_dir, defaults, models)", f, key));
  Recipe r;
  r.file = file;
  r.output_dir = base;
  if (j.contains("output_dir")) {
    if (!j["output_dir"].is_string()) throw UsageError(fmt::format("{}: output_dir: expected a directory name", f));
    r.output_dir = (base / j["output_dir"].get<std::string>()).lexically_normal();
  }
  json defaults = json::object();
  if (j.contains("defaults")) {
    if (!j["defaults"].is_object()) throw UsageError(fmt::format("{}: defaults: expected an object of settings", f));
    add_settings(j["defaults"], {}, f + ": defaults", base, is_setting, defaults);
  }
  if (!j.contains("models") || !j["models"].is_array() || j["models"].empty())
    throw UsageError(fmt::format("{}: models: expected a non-empty list of models", f));
  std::map<std::string, std::string> ids;  // id -> place
  for (size_t mi = 0; mi < j["models"].size(); ++mi) {
    const json& m = j["models"][mi];
    const std::string mw = fmt::format("{}: models[{}]", f, mi);
    if (!m.is_object()) throw UsageError(mw + ": expected an object with path and outputs");
    if (!m.contains("path") || !m["path"].is_string()) throw UsageError(mw + ".path: expected the model's path");
    if (m.contains("name") && !m["name"].is_string()) throw UsageError(mw + ".name: expected a string");
    if (!m.contains("outputs") || !m["outputs"].is_array() || m["outputs"].empty())
      throw UsageError(mw + ".outputs: expected a non-empty list of outputs");
    const fs::path model = (base / m["path"].get<std::string>()).lexically_normal();
    std::string name = m.value("name", "");
    if (name.empty()) name = (fs::is_directory(model) ? model.filename() : model.stem()).string();
    if (name.empty()) name = model.parent_path().filename().string();
    json model_settings = defaults;
    add_settings(m, {"path", "name", "outputs"}, mw, base, is_setting, model_settings);
    for (size_t oi = 0; oi < m["outputs"].size(); ++oi) {
      const json& o = m["outputs"][oi];
      const std::string ow = fmt::format("{}.outputs[{}]", mw, oi);
      if (!o.is_object()) throw UsageError(ow + ": expected an object of settings");
      if (o.contains("name") && (!o["name"].is_string() || o["name"].get<std::string>().empty() ||
                                 o["name"].get<std::string>().find('/') != std::string::npos))
        throw UsageError(ow + ".name: expected a file name (no directory)");
      RecipeOutput out;
      out.model_name = name;
      out.model = model;
      out.where = ow;
      out.settings = model_settings;
      add_settings(o, {"name"}, ow, base, is_setting, out.settings);
      if (out.settings.contains("imatrix_calib")) {
        if (!out.settings["imatrix_calib"].is_string()) throw UsageError(ow + ".imatrix_calib: expected one file");
        if (out.settings.contains("imatrix"))
          throw UsageError(ow + ": imatrix and imatrix_calib contradict each other: give one");
        out.imatrix_calib = out.settings["imatrix_calib"].get<std::string>();
      }
      out.id = o.contains("name") ? o["name"].get<std::string>() : default_output_name(name, out.settings);
      if (const auto [it, fresh] = ids.emplace(out.id, ow); !fresh)
        throw UsageError(fmt::format("{}: output '{}' is also made by {}; give one of them a \"name\"", ow, out.id, it->second));
      r.outputs.push_back(std::move(out));
    }
  }
  return r;
}

std::pair<size_t, size_t> parse_shard(const std::string& s) {
  const auto slash = s.find('/');
  size_t i = 0, n = 0;
  try {
    if (slash == std::string::npos) throw std::invalid_argument("");
    size_t a = 0, b = 0;
    i = std::stoul(s.substr(0, slash), &a);
    n = std::stoul(s.substr(slash + 1), &b);
    if (a != slash || b != s.size() - slash - 1) throw std::invalid_argument("");
  } catch (const std::exception&) {
    throw UsageError(fmt::format("--shard {}: expected I/N, e.g. 2/4", s));
  }
  if (n == 0 || i == 0 || i > n) throw UsageError(fmt::format("--shard {}: I must lie in 1..N", s));
  return {i, n};
}

fs::path manifest_path(const fs::path& output_dir, size_t shard, size_t shards) {
  if (shards <= 1) return output_dir / "quantize-manifest.json";
  return output_dir / fmt::format("quantize-manifest-{}-of-{}.json", shard, shards);
}

namespace {

// The events of outputs made together, one call at a time (each output runs in its own thread).
class LockedProgress final : public ProgressSink {
 public:
  LockedProgress(ProgressSink& to, std::mutex& m) : to_(to), m_(m) {}
  void begin_tensor(size_t index, size_t count, const TensorPlan& t) override {
    std::lock_guard lk(m_);
    to_.begin_tensor(index, count, t);
  }
  void advance(double fraction) override {
    std::lock_guard lk(m_);
    to_.advance(fraction);
  }
  void end_tensor(const TensorReport& r) override {
    std::lock_guard lk(m_);
    to_.end_tensor(r);
  }

 private:
  ProgressSink& to_;
  std::mutex& m_;
};

template <class... A>
std::function<void(A...)> locked(const std::function<void(A...)>& f, std::mutex& m) {
  if (!f) return {};
  return [&f, &m](A... a) {
    std::lock_guard lk(m);
    f(a...);
  };
}

}  // namespace

std::vector<BatchResult> run_batch(const Recipe& recipe, const std::vector<BatchOutput>& outputs, const BatchOptions& o,
                                   const BatchEvents& ev) {
  const fs::path mpath = manifest_path(recipe.output_dir, o.shard, o.shards);
  json manifest = read_manifest(mpath);
  const json merged = o.shards > 1 ? read_manifest(manifest_path(recipe.output_dir, 1, 1)) : json();
  manifest["recipe"] = recipe.file.string();
  auto find_record = [&](const std::string& id) -> const json* {
    if (manifest["records"].contains(id)) return &manifest["records"][id];
    if (merged.is_object() && merged["records"].contains(id)) return &merged["records"][id];
    return nullptr;
  };
  auto save = [&] {
    fs::create_directories(recipe.output_dir);
    write_text_file(mpath, manifest.dump(1) + "\n", true);
  };
  std::vector<size_t> mine;
  for (size_t i = 0; i < outputs.size(); ++i)
    if (i % o.shards == o.shard - 1) mine.push_back(i);

  // What each output needs: nothing (its record holds), or to be made, and why.
  struct Todo {
    json inputs;
    std::string why;
  };
  std::vector<Todo> todo(mine.size());
  for (size_t k = 0; k < mine.size(); ++k) {
    const BatchOutput& out = outputs[mine[k]];
    todo[k].inputs = fingerprint(out.recipe.model, out.recipe.settings);
    todo[k].why = stale_reason(find_record(out.recipe.id), out.recipe.settings, todo[k].inputs, out.job.output);
  }
  // Outputs to make that can share one calibration capture are made together, when the first of them comes up.
  std::map<std::string, std::vector<size_t>> sharing;
  if (!o.dry_run)
    for (size_t k = 0; k < mine.size(); ++k)
      if (!todo[k].why.empty())
        if (const std::string key = shared_calibration_key(outputs[mine[k]].job); !key.empty()) sharing[key].push_back(k);
  std::vector<const std::vector<size_t>*> group_of(mine.size(), nullptr);
  for (const auto& [key, ks] : sharing)
    if (ks.size() > 1)
      for (const size_t k : ks) group_of[k] = &ks;

  // The job of an output to make: the batch owns its outputs (the manifest says what is done), and an imatrix asked
  // for by imatrix_calib is made once per model and file, shared by the outputs that ask for it.
  auto prepare = [&](const BatchOutput& out) {
    QuantizeJob job = out.job;
    job.force = true;
    fs::create_directories(job.output.parent_path());
    if (out.recipe.imatrix_calib) {
      const std::string key = "imatrix:" + out.recipe.model_name + ":" + out.recipe.imatrix_calib->filename().string();
      const fs::path im = recipe.output_dir / (out.recipe.model_name + "." + out.recipe.imatrix_calib->stem().string() + ".imatrix.gguf");
      const json im_settings = {{"model", out.recipe.model.string()}, {"calib", out.recipe.imatrix_calib->string()}};
      const json im_inputs = fingerprint(out.recipe.model, {{"imatrix_calib", out.recipe.imatrix_calib->string()}});
      if (!stale_reason(find_record(key), im_settings, im_inputs, im).empty()) {
        ImatrixJob ij;
        ij.model = out.recipe.model;
        ij.calib = {*out.recipe.imatrix_calib};
        ij.output = im;
        ij.force = true;
        ij.threads = o.threads;
        run_imatrix(ij);
        json ir = {{"status", "done"}, {"settings", im_settings}, {"inputs", im_inputs}, {"sha256", sha256_file(im)}};
        ir.update(file_state(im));
        manifest["records"][key] = ir;
        save();
      }
      job.imatrix = im;
    }
    return job;
  };
  // A made output's record: its report, its gates, the file's digest.
  auto complete = [&](const BatchOutput& out, const QuantizeJob& job, const Report& report, json& rec) {
    rec["report"] = to_json(report);
    rec["status"] = "done";
    if (out.gates.any()) {
      const GateResult g = check_quality_gates(out.recipe.model, job.output, out.gates, o.threads);
      rec["quality"] = to_json(out.gates, g);
      if (!g.passed()) {
        rec["status"] = "gate_failed";
        std::string all;
        for (const auto& f : g.failures) all += (all.empty() ? "" : "; ") + f;
        rec["error"] = all;
      }
    }
    if (fs::is_regular_file(job.output)) {
      rec["sha256"] = sha256_file(job.output);
      rec.update(file_state(job.output));
    }
  };

  std::vector<std::optional<BatchResult>> results_of(mine.size());
  struct Making {
    size_t k;
    std::chrono::steady_clock::time_point t0;
    json rec;
    QuantizeJob job;
    std::optional<Report> report;
    std::exception_ptr error;
  };
  auto record = [&](Making& m) {
    const BatchOutput& out = outputs[mine[m.k]];
    try {
      if (m.error) std::rethrow_exception(m.error);
      complete(out, m.job, *m.report, m.rec);
    } catch (const std::exception& e) {
      m.rec["status"] = "error";
      m.rec["error"] = e.what();
    }
    BatchResult r;
    r.id = out.recipe.id;
    r.model_name = out.recipe.model_name;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - m.t0).count();
    m.rec["seconds"] = r.seconds;
    m.rec["finished_at"] = now_utc();
    r.status = m.rec["status"];
    r.reason = m.rec.value("error", std::string());
    manifest["records"][r.id] = m.rec;
    r.record = m.rec;
    save();
    if (ev.finished) ev.finished(r);
    results_of[m.k] = std::move(r);
  };
  auto start = [&](size_t k) {
    const BatchOutput& out = outputs[mine[k]];
    if (ev.starting) ev.starting(out, k, mine.size());
    Making m{k, std::chrono::steady_clock::now(), {}, {}, {}, {}};
    m.rec = {{"model", out.recipe.model.string()}, {"model_name", out.recipe.model_name},
             {"settings", out.recipe.settings},   {"inputs", todo[k].inputs},
             {"output", out.job.output.string()}, {"where", out.recipe.where}};
    try {
      m.job = prepare(out);
    } catch (...) {
      m.error = std::current_exception();
    }
    return m;
  };

  for (size_t k = 0; k < mine.size(); ++k) {
    if (results_of[k]) continue;  // made with the group it shares its calibration with
    const BatchOutput& out = outputs[mine[k]];
    const std::string& why = todo[k].why;
    if (why.empty() || o.dry_run) {
      BatchResult r;
      r.id = out.recipe.id;
      r.model_name = out.recipe.model_name;
      if (why.empty()) {
        const json* record_found = find_record(r.id);
        r.up_to_date = true;
        r.status = (*record_found)["status"];
        r.record = *record_found;
        r.reason = r.status == "gate_failed" ? "its gates failed: " + (*record_found).value("error", std::string()) : "";
      } else {
        r.status = "planned";
        r.reason = why;
      }
      if (ev.finished) ev.finished(r);
      results_of[k] = std::move(r);
      continue;
    }
    if (!group_of[k]) {
      Making m = start(k);
      if (!m.error) try {
          m.report = run_quantize(m.job, ev.quantize);
        } catch (...) {
          m.error = std::current_exception();
        }
      record(m);
      continue;
    }
    // The outputs sharing one calibration capture, each in its own thread, through the model's blocks together.
    std::vector<Making> group;
    for (const size_t g : *group_of[k]) group.push_back(start(g));
    std::vector<Making*> ready;
    for (auto& m : group)
      if (!m.error) ready.push_back(&m);
    try {
      if (!ready.empty()) {
        const auto shared = open_shared_calibration(ready.front()->job, ready.size());
        for (size_t i = 0; i < ready.size(); ++i) {
          ready[i]->job.shared_calibration = shared;
          ready[i]->job.shared_index = i;
        }
      }
    } catch (...) {
      for (Making* m : ready) m->error = std::current_exception();
      ready.clear();
    }
    std::mutex events_mutex;
    std::optional<LockedProgress> progress;
    if (ev.quantize.progress) progress.emplace(*ev.quantize.progress, events_mutex);
    QuantizeEvents qe;
    qe.warn = locked(ev.quantize.warn, events_mutex);
    qe.note = locked(ev.quantize.note, events_mutex);
    qe.planned = locked(ev.quantize.planned, events_mutex);
    qe.awq.group = locked(ev.quantize.awq.group, events_mutex);
    qe.awq.clip = locked(ev.quantize.awq.clip, events_mutex);
    qe.awq_done = locked(ev.quantize.awq_done, events_mutex);
    qe.block = locked(ev.quantize.block, events_mutex);
    qe.progress = progress ? &*progress : nullptr;
    std::vector<std::thread> threads;
    for (Making* m : ready)
      threads.emplace_back([m, &qe] {
        try {
          m->report = run_quantize(m->job, qe);
        } catch (...) {
          m->error = std::current_exception();
        }
        m->job.shared_calibration.reset();
      });
    for (auto& t : threads) t.join();
    for (auto& m : group) {
      if (m.report) {
        json with = json::array();
        for (const Making* other : ready)
          if (other != &m) with.push_back(outputs[mine[other->k]].recipe.id);
        m.rec["calibration_shared_with"] = with;  // the outputs made from the same capture
      }
      record(m);
    }
  }
  std::vector<BatchResult> results;
  for (auto& r : results_of) results.push_back(std::move(*r));
  return results;
}

size_t merge_manifests(const fs::path& output_dir) {
  const fs::path target = manifest_path(output_dir, 1, 1);
  json merged = read_manifest(target);
  std::vector<fs::path> parts;
  if (fs::is_directory(output_dir))
    for (const auto& e : fs::directory_iterator(output_dir)) {
      const std::string n = e.path().filename().string();
      if (n.starts_with("quantize-manifest-") && n.ends_with(".json") && n.find("-of-") != std::string::npos)
        parts.push_back(e.path());
    }
  if (parts.empty()) throw UsageError(fmt::format("{}: no shard manifests (quantize-manifest-I-of-N.json) to merge", output_dir.string()));
  std::sort(parts.begin(), parts.end());
  for (const auto& p : parts) {
    const json part = read_manifest(p);
    if (part.contains("recipe")) merged["recipe"] = part["recipe"];
    for (const auto& [id, rec] : part["records"].items()) {
      json& slot = merged["records"][id];
      if (slot.is_null() || rec.value("finished_at", std::string()) >= slot.value("finished_at", std::string())) slot = rec;
    }
  }
  write_text_file(target, merged.dump(1) + "\n", true);
  return merged["records"].size();
}

nlohmann::json batch_report(const Recipe& recipe, const BatchOptions& o, const std::vector<BatchResult>& results) {
  json outs = json::array();
  std::map<std::string, size_t> counts;
  for (const auto& r : results) {
    ++counts[r.up_to_date ? "up_to_date" : r.status];
    json j = {{"id", r.id}, {"model", r.model_name}, {"status", r.status}, {"up_to_date", r.up_to_date},
              {"reason", r.reason}, {"seconds", r.seconds}};
    for (const char* k : {"output", "sha256", "bytes", "report", "quality", "settings", "error"})
      if (r.record.contains(k)) j[k] = r.record[k];
    outs.push_back(std::move(j));
  }
  return {{"recipe", recipe.file.string()},
          {"output_dir", recipe.output_dir.string()},
          {"shard", fmt::format("{}/{}", o.shard, o.shards)},
          {"dry_run", o.dry_run},
          {"counts", counts},
          {"exit_code", batch_exit_code(results)},
          {"outputs", outs}};
}

std::string junit_xml(const Recipe& recipe, const std::vector<BatchResult>& results) {
  size_t failures = 0, errors = 0;
  double total = 0;
  for (const auto& r : results) {
    failures += r.status == "gate_failed";
    errors += r.status == "error";
    total += r.seconds;
  }
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  x += fmt::format("<testsuites>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3f}\">\n",
                   xml_escape("quantize batch " + recipe.file.filename().string()), results.size(), failures, errors, total);
  for (const auto& r : results) {
    x += fmt::format("  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3f}\"", xml_escape(r.model_name), xml_escape(r.id), r.seconds);
    std::string body;
    if (r.status == "gate_failed")
      body = fmt::format("    <failure message=\"{}\" type=\"quality_gate\"/>\n", xml_escape(r.record.value("error", r.reason)));
    else if (r.status == "error")
      body = fmt::format("    <error message=\"{}\" type=\"error\"/>\n", xml_escape(r.reason));
    else if (r.status == "planned")
      body = fmt::format("    <skipped message=\"{}\"/>\n", xml_escape("dry run: " + r.reason));
    if (r.record.contains("quality"))
      body += fmt::format("    <system-out>{}</system-out>\n", xml_escape(r.record["quality"].dump()));
    x += body.empty() ? "/>\n" : ">\n" + body + "  </testcase>\n";
  }
  x += "</testsuite>\n</testsuites>\n";
  return x;
}

int batch_exit_code(const std::vector<BatchResult>& results) {
  bool gate = false;
  for (const auto& r : results) {
    if (r.status == "error") return 2;
    gate |= r.status == "gate_failed";
  }
  return gate ? 3 : 0;
}

}  // namespace qz
