// Progress display for the CLI: a bar per tensor on a terminal, one plain line per tensor otherwise.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "qz/pipeline/quantize.hpp"

namespace qz::cli {

class ConsoleProgress final : public ProgressSink {
 public:
  // `tty`: redraw a bar in place; otherwise print a line when each tensor is done. `quiet`: print nothing.
  ConsoleProgress(std::FILE* out, bool tty, bool quiet) : out_(out), tty_(tty), quiet_(quiet) {}
  void begin_tensor(size_t index, size_t count, const TensorPlan& t) override;
  void advance(double fraction) override;
  void end_tensor(const TensorReport& r) override;

 private:
  void draw(double fraction);
  std::FILE* out_;
  bool tty_;
  bool quiet_;
  std::string prefix_;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace qz::cli
