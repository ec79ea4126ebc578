// Resolving the options once: the storage spellings, each method's defaults, and every setting that does nothing
// in its combination (an error when it contradicts the storage, a warning saying why when it is ignored).
#include <gtest/gtest.h>

#include "qz/core/error.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize_config.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

QuantizeOptions spelled(const std::string& method) {
  QuantizeOptions o;
  set_method(o, method);
  return o;
}

bool has_warning(const QuantizeConfig& c, const std::string& part) {
  for (const auto& w : c.warnings)
    if (w.find(part) != std::string::npos) return true;
  return false;
}

TEST(QuantizeConfig, AbsmaxAndZeropointAreSpellingsOfIntegerGridTypes) {
  QuantizeOptions a = spelled("absmax");
  a.bits = 4;
  a.group_size = 128;
  QuantizeOptions t;
  t.type = "int4_sym_g128";
  const QuantizeConfig ca = resolve_options(a), ct = resolve_options(t);
  EXPECT_EQ(ca.method, Method::Rtn);
  EXPECT_EQ(ca.target.format_name, "int4_sym_g128");
  EXPECT_EQ(ct.target.format_name, "int4_sym_g128");
  EXPECT_EQ(ca.target.format_for(256)->name(), ct.target.format_for(256)->name());
  QuantizeOptions z = spelled("zeropoint");
  z.bits = 3;
  z.group_size = -1;
  EXPECT_EQ(resolve_options(z).target.format_for(96)->name(), "int3_asym_row");
  // absmax 8-bit groups of 32 is stored as llama.cpp's Q8_0, and the reason says so; 3-bit keeps the own layout.
  QuantizeOptions q8 = spelled("absmax");
  q8.bits = 8;
  q8.group_size = 32;
  const QuantizeConfig c8 = resolve_options(q8);
  EXPECT_EQ(c8.target.format_for(256)->storage_type(), GgmlType::Q8_0);
  EXPECT_NE(c8.target.why.find("stored as llama.cpp's Q8_0"), std::string::npos) << c8.target.why;
  EXPECT_NE(resolve_options(z).target.why.find("this tool's own layout"), std::string::npos);
  // NF4: the method spells the table's whole-tensor type.
  QuantizeOptions n = spelled("nf4");
  EXPECT_EQ(resolve_options(n).target.format_name, "nf4_b64_dq");
  n.group_size = 128;
  n.double_quant = false;
  EXPECT_EQ(resolve_options(n).target.format_name, "nf4_b128");
  EXPECT_EQ(resolve_options(spelled("fp4")).target.format_name, "fp4_b64_dq");
  QuantizeOptions tn;
  tn.type = "nf4_b64_dq";
  EXPECT_TRUE(resolve_options(tn).target.format_for(100)->whole_tensor());
}

TEST(QuantizeConfig, DefaultsOfEachMethod) {
  const QuantizeConfig rtn = resolve_options(QuantizeOptions{});
  EXPECT_EQ(rtn.target.name, "Q8_0");
  EXPECT_FALSE(rtn.gptq);
  EXPECT_FALSE(rtn.awq);
  const QuantizeConfig g = resolve_options(spelled("gptq"));
  EXPECT_EQ(g.target.format_name, "int4_asym_g128");  // asymmetric, as the GPTQ reference
  ASSERT_TRUE(g.gptq);
  EXPECT_DOUBLE_EQ(g.gptq->config.damp, 0.01);
  EXPECT_EQ(g.gptq->config.block_size, 128u);
  QuantizeOptions sym = spelled("gptq");
  sym.symmetric = true;
  sym.bits = 3;
  EXPECT_EQ(resolve_options(sym).target.format_name, "int3_sym_g128");
  QuantizeOptions awq = spelled("awq");
  awq.type = "Q4_0";
  ASSERT_TRUE(resolve_options(awq).awq);
  EXPECT_TRUE(resolve_options(awq).awq->clip);
  EXPECT_EQ(resolve_options(awq).awq->tokens, 512u);
  QuantizeOptions both = spelled("awq+gptq");
  both.type = "Q4_0";
  EXPECT_FALSE(resolve_options(both).awq->clip);
  EXPECT_TRUE(resolve_options(both).gptq);
}

TEST(QuantizeConfig, SettingsThatContradictTheStorageAreErrors) {
  auto rejects = [](QuantizeOptions o, std::initializer_list<std::string> parts, ResolveContext ctx = {}) {
    test::expect_error<UsageError>([&] { resolve_options(o, ctx); }, parts);
  };
  QuantizeOptions o = spelled("gptq");
  o.type = "Q4_K_M";
  o.bits = 3;
  rejects(o, {"--bits 3", "--type Q4_K_M"});
  o.bits.reset();
  o.group_size = 64;
  rejects(o, {"--group-size 64", "--type Q4_K_M"});
  QuantizeOptions a = spelled("absmax");
  a.symmetric = false;
  rejects(a, {"--asym", "absmax is symmetric"});
  QuantizeOptions n = spelled("nf4");
  n.bits = 4;
  rejects(n, {"--bits 4", "4-bit"});
  rejects(spelled("nf4"), {"--imatrix", "nf4_b64_dq"}, {true, false});
  QuantizeOptions gn = spelled("gptq");
  gn.type = "nf4_b64_dq";
  rejects(gn, {"--method gptq", "nf4_b64_dq"});
  QuantizeOptions r;
  r.bits = 4;
  rejects(r, {"--bits 4", "--method absmax"});
  QuantizeOptions ie;
  ie.include_weights = {"attn"};
  ie.exclude_weights = {"ffn"};
  rejects(ie, {"--include-weights", "--exclude-weights"});
  QuantizeOptions lo;
  lo.leave_output_tensor = true;
  lo.output_tensor_type = "Q8_0";
  rejects(lo, {"--leave-output-tensor", "--output-tensor-type"});
  QuantizeOptions bad;
  bad.output_tensor_type = "Q9_9";
  rejects(bad, {"--output-tensor-type Q9_9", "unknown type"});
  QuantizeOptions bits = spelled("absmax");
  bits.bits = 12;
  rejects(bits, {"--bits 12"});
  QuantizeOptions damp = spelled("gptq");
  damp.damp = -1;
  rejects(damp, {"--damp -1"});
}

TEST(QuantizeConfig, SettingsOfAnUnusedMethodAreWarnings) {
  QuantizeOptions o;
  o.type = "int4_sym_g32";  // one format, not a mix
  o.damp = 0.5;
  o.act_order = true;
  o.awq_tokens = 64;
  o.double_quant = true;
  o.pure = true;
  o.include_weights = {"attn"};
  const QuantizeConfig c = resolve_options(o, {false, true});
  EXPECT_TRUE(has_warning(c, "--damp 0.5 is ignored: it applies to --method gptq"));
  EXPECT_TRUE(has_warning(c, "--act-order is ignored"));
  EXPECT_TRUE(has_warning(c, "--awq-tokens 64 is ignored: it applies to --method awq"));
  EXPECT_TRUE(has_warning(c, "--double-quant is ignored: it applies to --method nf4"));
  EXPECT_TRUE(has_warning(c, "--pure is ignored"));
  EXPECT_TRUE(has_warning(c, "--include-weights is ignored"));
  EXPECT_TRUE(has_warning(c, "--calib is ignored"));
  EXPECT_EQ(c.warnings.size(), 7u);
  // The same settings with the method that uses them: no warning.
  QuantizeOptions g = spelled("gptq");
  g.damp = 0.5;
  g.act_order = true;
  EXPECT_TRUE(resolve_options(g, {false, true}).warnings.empty());
}

TEST(QuantizeConfig, ImatrixFilterMatchesSubstringsAsLlamaQuantize) {
  const ImatrixFilter none;
  EXPECT_TRUE(none.uses("blk.0.attn_q.weight"));
  const ImatrixFilter inc{{"attn_v", "ffn_down"}, {}};
  EXPECT_TRUE(inc.uses("blk.3.attn_v.weight"));
  EXPECT_FALSE(inc.uses("blk.3.attn_q.weight"));
  const ImatrixFilter exc{{}, {"output"}};
  EXPECT_FALSE(exc.uses("output.weight"));
  EXPECT_FALSE(exc.uses("blk.0.attn_output.weight"));  // a substring, as llama-quantize matches it
  EXPECT_TRUE(exc.uses("blk.0.ffn_up.weight"));
}

TEST(QuantizeConfig, PerTensorRulesOfLlamaQuantize) {
  test::TempDir dir;
  write_demo_checkpoint(dir / "demo");  // BF16 weights, an untied output head
  const Checkpoint ck = Checkpoint::open(dir / "demo");
  auto type_of = [](const Plan& p, const std::string& name) {
    for (const auto& t : p.tensors)
      if (t.name == name) return t.format->name();
    return std::string("?");
  };
  QuantizeOptions o;
  o.type = "Q4_0";
  o.output_tensor_type = "Q5_0";
  o.token_embedding_type = "F16";
  Plan p = make_plan(ck, o);
  EXPECT_EQ(type_of(p, "output.weight"), "Q5_0");
  EXPECT_EQ(type_of(p, "token_embd.weight"), "F16");
  EXPECT_EQ(type_of(p, "blk.0.attn_q.weight"), "Q4_0");
  o.output_tensor_type.clear();
  o.leave_output_tensor = true;
  p = make_plan(ck, o);
  EXPECT_EQ(type_of(p, "output.weight"), "BF16");  // kept as the checkpoint stores it
  o.leave_output_tensor = false;
  p = make_plan(ck, o);
  EXPECT_EQ(type_of(p, "output.weight"), "Q6_K");  // llama-quantize's rule for the head
  // A dry run of GPTQ plans without calibration data.
  QuantizeOptions g = spelled("gptq");
  const Plan dry = make_plan(ck, g, nullptr, {}, nullptr, true);
  EXPECT_TRUE(std::any_of(dry.tensors.begin(), dry.tensors.end(), [](const TensorPlan& t) { return t.gptq; }));
  EXPECT_THROW(make_plan(ck, g), UsageError);  // a real run needs --calib
}

}  // namespace
}  // namespace qz
