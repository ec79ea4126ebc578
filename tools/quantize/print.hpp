// What the CLI prints: the plan table, the run's summary, AWQ's progress lines and the --json report.
#pragma once

#include <cstdio>
#include <string>

#include "qz/pipeline/commands.hpp"

namespace qz::cli {

void print_plan(std::FILE* out, const Plan& plan);
void print_summary(std::FILE* out, const Report& r, const std::string& output_format);
AwqProgress awq_progress(std::FILE* out, bool quiet, bool verbose);
void write_text(const std::string& path, const std::string& text);  // "-": stdout

}  // namespace qz::cli
