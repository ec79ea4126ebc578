#include "qz/pipeline/options.hpp"

#include <fmt/format.h>

#include "qz/core/error.hpp"

namespace qz {

std::string method_name(Method m) {
  switch (m) {
    case Method::Rtn: return "rtn";
    case Method::Gptq: return "gptq";
    case Method::Awq: return "awq";
    case Method::AwqGptq: return "awq+gptq";
  }
  return "?";
}

void set_method(QuantizeOptions& o, const std::string& s) {
  o.spelling = TypeSpelling::None;
  if (s == "rtn") o.method = Method::Rtn;
  else if (s == "gptq") o.method = Method::Gptq;
  else if (s == "awq") o.method = Method::Awq;
  else if (s == "awq+gptq") o.method = Method::AwqGptq;
  else if (s == "absmax") o.spelling = TypeSpelling::Absmax;
  else if (s == "zeropoint") o.spelling = TypeSpelling::Zeropoint;
  else if (s == "nf4") o.spelling = TypeSpelling::Nf4;
  else if (s == "fp4") o.spelling = TypeSpelling::Fp4;
  else
    throw UsageError(fmt::format(
        "--method {}: unknown method (known: rtn, gptq, awq, awq+gptq; and absmax, zeropoint, nf4, fp4 for "
        "round-to-nearest into the storage they name)",
        s));
  if (o.spelling != TypeSpelling::None) o.method = Method::Rtn;
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
