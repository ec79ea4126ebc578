#include "qz/model/model_card.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "qz/io/gguf.hpp"

namespace qz {

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::string unquote(std::string s) {
  s = trim(s);
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) s = s.substr(1, s.size() - 2);
  return s;
}

// "[a, b]" or a scalar -> items.
std::vector<std::string> inline_items(const std::string& v) {
  std::vector<std::string> out;
  const std::string t = trim(v);
  if (t.size() >= 2 && t.front() == '[' && t.back() == ']') {
    std::stringstream ss(t.substr(1, t.size() - 2));
    std::string item;
    while (std::getline(ss, item, ','))
      if (!unquote(item).empty()) out.push_back(unquote(item));
  } else if (!t.empty()) {
    out.push_back(unquote(t));
  }
  return out;
}

}  // namespace

std::string hub_title(const std::string& id) {
  std::string spaced = id;
  for (auto& c : spaced)
    if (c == '-') c = ' ';
  std::stringstream ss(spaced);
  std::string word, out;
  while (ss >> word) {
    const bool lower = std::any_of(word.begin(), word.end(), [](unsigned char c) { return std::isalpha(c); }) &&
                       std::none_of(word.begin(), word.end(), [](unsigned char c) { return std::isupper(c); });
    const bool version = word.size() > 1 && word[0] == 'v' && std::isdigit(static_cast<unsigned char>(word[1])) &&
                         word.find_first_not_of("0123456789.", 1) == std::string::npos;
    const bool digit = std::isdigit(static_cast<unsigned char>(word[0])) != 0;
    if (lower && !version && !digit) {  // Python's str.title(): upper after every non-letter
      bool start = true;
      for (auto& c : word) {
        const bool alpha = std::isalpha(static_cast<unsigned char>(c)) != 0;
        c = static_cast<char>(alpha && start ? std::toupper(static_cast<unsigned char>(c)) : c);
        start = !alpha;
      }
    }
    out += (out.empty() ? "" : " ") + word;
  }
  return out;
}

HubRef hub_ref(const std::string& id) {
  HubRef r;
  const auto slash = id.find('/');
  if (slash == std::string::npos) {
    r.name = hub_title(id);
    return r;
  }
  const std::string org = id.substr(0, slash), name = id.substr(slash + 1);
  r.name = hub_title(name);
  r.organization = hub_title(org);
  r.repo_url = "https://huggingface.co/" + org + "/" + name;
  return r;
}

std::optional<ModelCard> parse_model_card(const std::string& text) {
  std::stringstream in(text);
  std::string line;
  if (!std::getline(in, line) || trim(line) != "---") return std::nullopt;
  ModelCard card;
  std::string list_key;  // the key a block list belongs to
  bool closed = false;
  auto assign = [&](const std::string& key, const std::vector<std::string>& items) {
    if (items.empty()) return;
    if (key == "license") card.license = items.front();
    else if (key == "license_name") card.license_name = items.front();
    else if (key == "license_link") card.license_link = items.front();
    else if (key == "tags") card.tags.insert(card.tags.end(), items.begin(), items.end());
    else if (key == "language" || key == "languages") card.languages.insert(card.languages.end(), items.begin(), items.end());
    else if (key == "base_model")
      for (const auto& i : items) card.base_models.push_back(hub_ref(i));
    else if (key == "datasets")
      for (const auto& i : items) card.datasets.push_back(hub_ref(i));
  };
  while (std::getline(in, line)) {
    if (trim(line) == "---") {
      closed = true;
      break;
    }
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    if (t[0] == '-' && !list_key.empty() && std::isspace(static_cast<unsigned char>(line[0])) + (line[0] == '-') > 0) {
      assign(list_key, {unquote(t.substr(1))});
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(line[0]))) continue;  // nested mappings: not read
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
    list_key = value.empty() ? key : "";
    assign(key, inline_items(value));
  }
  if (!closed) return std::nullopt;
  return card;
}

std::optional<ModelCard> read_model_card(const std::filesystem::path& readme) {
  std::ifstream f(readme);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_model_card(ss.str());
}

std::string size_label(uint64_t parameters) {
  const double n = static_cast<double>(parameters);
  double scaled;
  const char* suffix;
  if (n > 1e12) scaled = n * 1e-12, suffix = "T";
  else if (n > 1e9) scaled = n * 1e-9, suffix = "B";
  else if (n > 1e6) scaled = n * 1e-6, suffix = "M";
  else scaled = n * 1e-3, suffix = "K";
  // As the converter: enough decimals for at least two significant digits (Python's round: half to even).
  const double r = std::nearbyint(scaled);
  std::string digits = fmt::format("{:.0f}", r);
  const size_t lead = digits.find_first_not_of('0');
  const size_t len = lead == std::string::npos ? 0 : digits.size() - lead;
  const int fix = std::max(0, 2 - static_cast<int>(len));
  return fmt::format("{:.{}f}{}", scaled, fix, suffix);
}

void write_model_card_metadata(GgufWriter& w, const ModelCard& c) {
  if (!c.license.empty()) w.set("general.license", c.license);
  if (!c.license_name.empty()) w.set("general.license.name", c.license_name);
  if (!c.license_link.empty()) w.set("general.license.link", c.license_link);
  if (!c.tags.empty()) w.set("general.tags", GgufValue::strings(c.tags));
  if (!c.languages.empty()) w.set("general.languages", GgufValue::strings(c.languages));
  auto refs = [&](const std::string& prefix, const std::vector<HubRef>& v) {
    if (v.empty()) return;
    w.set(prefix + ".count", static_cast<uint32_t>(v.size()));
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string p = fmt::format("{}.{}.", prefix, i);
      w.set(p + "name", v[i].name);
      if (!v[i].organization.empty()) w.set(p + "organization", v[i].organization);
      if (!v[i].repo_url.empty()) w.set(p + "repo_url", v[i].repo_url);
    }
  };
  refs("general.base_model", c.base_models);
  refs("general.dataset", c.datasets);
}

}  // namespace qz
