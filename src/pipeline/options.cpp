#include "qz/pipeline/options.hpp"

#include <fmt/format.h>

#include "qz/core/error.hpp"
#include "qz/core/parallel.hpp"

namespace qz {

unsigned QuantizeOptions::effective_threads() const { return threads == 0 ? hardware_threads() : threads; }

std::string method_name(MethodKind m) {
  switch (m) {
    case MethodKind::Rtn: return "rtn";
    case MethodKind::Absmax: return "absmax";
    case MethodKind::Zeropoint: return "zeropoint";
    case MethodKind::Gptq: return "gptq";
    case MethodKind::Nf4: return "nf4";
    case MethodKind::Fp4: return "fp4";
    case MethodKind::Awq: return "awq";
    case MethodKind::AwqGptq: return "awq+gptq";
  }
  return "?";
}

MethodKind parse_method(const std::string& s) {
  if (s == "rtn") return MethodKind::Rtn;
  if (s == "absmax") return MethodKind::Absmax;
  if (s == "zeropoint") return MethodKind::Zeropoint;
  if (s == "gptq") return MethodKind::Gptq;
  if (s == "nf4") return MethodKind::Nf4;
  if (s == "fp4") return MethodKind::Fp4;
  if (s == "awq") return MethodKind::Awq;
  if (s == "awq+gptq") return MethodKind::AwqGptq;
  throw UsageError(
      fmt::format("--method {}: unknown method (known: rtn, absmax, zeropoint, gptq, awq, awq+gptq, nf4, fp4)", s));
}

TensorTypeOverride parse_tensor_type_override(const std::string& s) {
  const auto eq = s.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
    throw UsageError(fmt::format("--tensor-type {}: expected PATTERN=TYPE", s));
  TensorTypeOverride o;
  o.pattern = s.substr(0, eq);
  o.type = s.substr(eq + 1);
  try {
    o.re = std::regex(o.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw UsageError(fmt::format("--tensor-type {}: bad regular expression: {}", s, e.what()));
  }
  return o;
}

}  // namespace qz
