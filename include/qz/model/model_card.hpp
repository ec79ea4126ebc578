// A checkpoint's model card (README.md with YAML front matter, as the Hugging Face Hub keeps it) and the general.*
// naming keys llama.cpp's converter derives from it and from the parameter count.
//
// Only the front matter's simple forms are read: `key: value`, `key: [a, b]` and block lists (`key:` then
// `- item` lines); values may be quoted. That covers the fields used here (license, license_name, license_link,
// tags, language, base_model, datasets); anything else is ignored.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace qz {

class GgufWriter;

// A Hub reference ("org/name"), as the converter expands it.
struct HubRef {
  std::string name;          // title-cased name ("Llama 2 7b Hf")
  std::string organization;  // title-cased org ("Meta Llama"), empty without one
  std::string repo_url;      // https://huggingface.co/org/name
};

struct ModelCard {
  std::string license, license_name, license_link;
  std::vector<std::string> tags, languages;
  std::vector<HubRef> base_models, datasets;
};

// nullopt when the file does not exist or has no front matter.
std::optional<ModelCard> read_model_card(const std::filesystem::path& readme);
// Parses the text of a README.md.
std::optional<ModelCard> parse_model_card(const std::string& text);

// The converter's id_to_title: words split on '-' and spaces, lower-case words title-cased unless they are a
// version (v1.2) or start with a digit.
std::string hub_title(const std::string& id);
HubRef hub_ref(const std::string& id);

// general.size_label from a parameter count: "15M", "4.5M", "260K", "8.0B" (two significant digits at least).
std::string size_label(uint64_t parameters);

// general.license, general.tags, general.languages, general.base_model.*, general.dataset.*.
void write_model_card_metadata(GgufWriter& w, const ModelCard& card);

}  // namespace qz
