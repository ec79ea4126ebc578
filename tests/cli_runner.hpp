// Runs the quantize executable built beside the tests, with its exit code and everything it printed.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace qz::test {

struct CliResult {
  int code;            // exit status; -1 when killed by a signal
  std::string output;  // stdout and stderr
};

inline CliResult run_quantize(const std::string& args) {
  const std::string cmd = std::string(QZ_QUANTIZE_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace qz::test
