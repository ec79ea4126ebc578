// The repository's own promises to a developer, checked where they can drift apart: the README's test command is the
// one .ci/run runs first (issue 30), the labels the README tells a developer to use select tests, and the library's
// includes follow docs/architecture.md's layers with no loop between modules.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <filesystem>
#include <map>
#include <set>
#include <vector>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  EXPECT_TRUE(in.good()) << p;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The first ```sh block after the line "## Tests" of the README.
std::string readme_test_command() {
  const std::string readme = read_text(fs::path(QZ_SOURCE_DIR) / "README.md");
  const size_t section = readme.find("\n## Tests\n");
  if (section == std::string::npos) return "";
  const size_t open = readme.find("```sh\n", section);
  const size_t close = readme.find("\n```", open + 6);
  if (open == std::string::npos || close == std::string::npos) return "";
  return readme.substr(open + 6, close - open - 6);
}

TEST(RepoConsistency, TheReadmesTestCommandIsWhatCiRunsFirst) {
  const std::string readme = readme_test_command();
  ASSERT_FALSE(readme.empty()) << "README.md: no ```sh block under '## Tests'";
  EXPECT_EQ(readme.find('\n'), std::string::npos) << "the README's test command is one line: " << readme;
  const std::string ci = read_text(fs::path(QZ_SOURCE_DIR) / ".ci" / "run");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(ci, m, std::regex("\nreadme_test_command='([^']*)'\n"))) << ".ci/run: no readme_test_command";
  EXPECT_EQ(m[1].str(), readme) << ".ci/run and the README's '## Tests' command differ";
  // ... and .ci/run runs that command before anything else it runs.
  const size_t runs = ci.find("rest=\"$readme_test_command\"");
  ASSERT_NE(runs, std::string::npos) << ".ci/run does not run readme_test_command";
  EXPECT_EQ(ci.rfind("\nphase ", runs), std::string::npos) << ".ci/run runs a phase before the README's test command";
  // It is a plain build and ctest: no sanitizer or fuzz build folded in (those are tools/check.sh).
  for (const char* step : {"bash tools/setup.sh", "cmake -S . -B build", "cmake --build build", "ctest --test-dir build"})
    EXPECT_NE(readme.find(step), std::string::npos) << step;
  for (const char* not_there : {"QUANTIZE_FUZZ", "QUANTIZE_SANITIZE", "clang"})
    EXPECT_EQ(readme.find(not_there), std::string::npos) << not_there;
}

// Each label the README tells a developer to pass to ctest selects tests in this very build tree.
TEST(RepoConsistency, EveryLabelTheReadmeNamesSelectsTests) {
  const std::string readme = read_text(fs::path(QZ_SOURCE_DIR) / "README.md");
  for (const char* label : {"unit", "cli", "llama", "model"}) {
    SCOPED_TRACE(label);
    EXPECT_NE(readme.find(std::string("-L ") + label), std::string::npos) << "the README does not name -L " << label;
    const std::string cmd = std::string("\"") + QZ_CTEST + "\" --test-dir \"" + QZ_BINARY_DIR + "\" -N -L " + label;
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    ASSERT_EQ(pclose(p), 0) << cmd;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(out, m, std::regex("Total Tests: ([0-9]+)"))) << out;
    EXPECT_GT(std::stoi(m[1].str()), 0) << cmd;
  }
}

// docs/architecture.md: core, io, formats, methods, model, engine, calibration, pipeline, each using only those before
// it. A module is a name under a layer (include/qz/L/N.hpp and src/L/N.cpp together); no module reaches itself
// through the includes of others (the loop io/gguf <-> io/gguf_split was one).
TEST(RepoConsistency, IncludesFollowTheLayersWithoutCycles) {
  const std::vector<std::string> layers = {"core", "io", "formats", "methods", "model", "engine", "calibration", "pipeline"};
  auto layer_of = [&](const std::string& module) {
    for (size_t i = 0; i < layers.size(); ++i)
      if (module.rfind(layers[i] + "/", 0) == 0) return static_cast<int>(i);
    return -1;
  };
  std::map<std::string, std::set<std::string>> uses;  // module -> modules it includes
  const std::regex include_line("#include \"qz/([a-z_]+/[a-z0-9_]+)\\.hpp\"");
  size_t files = 0;
  for (const char* root : {"include/qz", "src"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(QZ_SOURCE_DIR) / root)) {
      const std::string ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".hpp" && ext != ".cpp")) continue;
      const std::string module = e.path().parent_path().filename().string() + "/" + e.path().stem().string();
      ASSERT_GE(layer_of(module), 0) << e.path() << " is in no layer";
      ++files;
      const std::string text = read_text(e.path());
      for (std::sregex_iterator it(text.begin(), text.end(), include_line), end; it != end; ++it) {
        const std::string used = (*it)[1].str();
        if (used == module) continue;
        uses[module].insert(used);
        EXPECT_LE(layer_of(used), layer_of(module)) << e.path() << " includes qz/" << used << ".hpp, a later layer";
      }
    }
  }
  EXPECT_GT(files, 100u);
  // Depth-first search for a loop; the path is printed when one is found.
  std::map<std::string, int> state;  // 0 unvisited, 1 on the path, 2 done
  std::vector<std::string> path;
  std::function<void(const std::string&)> visit = [&](const std::string& m) {
    state[m] = 1;
    path.push_back(m);
    for (const auto& u : uses[m]) {
      if (state[u] == 1) {
        std::string loop;
        for (auto it = std::find(path.begin(), path.end(), u); it != path.end(); ++it) loop += *it + " -> ";
        ADD_FAILURE() << "include loop: " << loop << u;
      } else if (state[u] == 0) {
        visit(u);
      }
    }
    path.pop_back();
    state[m] = 2;
  };
  for (const auto& [m, _] : uses)
    if (state[m] == 0) visit(m);
}

}  // namespace
