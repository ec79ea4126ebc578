// The real JavaScript components of the tests (tests/integration: node-llama-cpp, @huggingface/gguf,
// @huggingface/tokenizers), run as child processes that print JSON.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace qz::test {

inline const std::filesystem::path kNodeScripts = std::filesystem::path(QZ_SOURCE_DIR) / "tests" / "integration";

// Why the node components cannot run (empty when they can).
inline std::string node_skip_reason(const char* package = "node-llama-cpp") {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not installed";
  if (!std::filesystem::exists(kNodeScripts / "node_modules" / package))
    return std::string("tests/integration/node_modules/") + package + " is missing (run tools/setup.sh)";
  return {};
}

// Runs a node script; returns its JSON output (ADD_FAILURE with the output if it failed or aborted).
inline nlohmann::json run_node(const std::string& script, const std::string& args) {
  const std::string cmd = "node " + (kNodeScripts / script).string() + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 65536> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    ADD_FAILURE() << cmd << " failed (status " << status << "):\n" << out.substr(0, 2000);
    return nlohmann::json::object();
  }
  const auto brace = out.find('{');
  return nlohmann::json::parse(out.substr(brace == std::string::npos ? 0 : brace));
}

}  // namespace qz::test
