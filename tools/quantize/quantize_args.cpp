#include "quantize_args.hpp"

namespace qz::cli {

namespace {

template <typename T>
void add(CLI::App& app, Optional<T>& o, const std::string& names, const std::string& help, const std::string& shown) {
  o.opt = app.add_option(names, o.value, help)->default_str(shown);
}

Switch add_switch(CLI::App& app, const std::string& on, const std::string& off, const std::string& help_on,
                  const std::string& help_off, const std::string& group) {
  return {app.add_flag(on)->description(help_on)->group(group), app.add_flag(off)->description(help_off)->group(group)};
}

}  // namespace

void add_quantize_options(CLI::App& app, QuantizeArgs& a) {
  QuantizeOptions& o = a.job.options;
  app.add_option("input", a.inputs,
                 "Checkpoint directory (with or without model.safetensors.index.json), .safetensors file(s), or a GGUF "
                 "model (F32/F16/BF16; the first part of a split GGUF)");
  app.add_option("-o,--output", a.output, "Output GGUF file (a directory with --output-format bnb)");
  app.add_option("-m,--method", a.method,
                 "rtn (the --type's own rounding), gptq (error feedback, needs --calib), awq (activation-aware "
                 "scaling folded into the model, then rtn; needs --calib), awq+gptq; absmax / zeropoint / nf4 / fp4 "
                 "spell a storage type with --bits / --group-size and round to nearest")
      ->capture_default_str();
  app.add_option("--type", o.type, "A llama-quantize mix (Q4_K_M, Q8_0, ...) or any storage type below (default Q8_0)");

  const std::string storage = "Storage spelled by --method absmax/zeropoint/gptq/awq and nf4/fp4";
  add(app, a.bits, "-b,--bits", "Bits of the integer grid, 2..8", "4");
  a.bits.opt->group(storage);
  add(app, a.group_size, "-g,--group-size",
      "Integer grids: input columns per group (-1 per output row, 0 per tensor); NF4/FP4: block size", "128; nf4 64");
  a.group_size.opt->group(storage);
  a.symmetric = add_switch(app, "--sym", "--asym", "gptq/awq integer grids: symmetric (absmax)",
                           "gptq/awq integer grids: asymmetric (zero-point; the default)", storage);
  a.double_quant = add_switch(app, "--double-quant", "--no-double-quant",
                              "NF4/FP4: quantize the block absmax values again, 8-bit in blocks of 256 (the default)",
                              "NF4/FP4: keep the block absmax values as fp32", storage);

  const std::string calib = "Calibration (gptq, awq)";
  app.add_option("--calib", a.calib,
                 "Calibration: text (.txt, .jsonl with a \"text\" field, .json list of strings or of token-id lists), "
                 "run through the model block by block; or activations (.safetensors, docs/calibration.md). Repeatable")
      ->allow_extra_args(false)
      ->group(calib);
  app.add_option("--calib-samples", a.job.sampling.samples, "Text: windows drawn from the text")->capture_default_str()->group(calib);
  app.add_option("--calib-seqlen", a.job.sampling.seqlen, "Text: tokens per window, BOS included")->capture_default_str()->group(calib);
  app.add_option("--calib-seed", a.job.sampling.seed, "Text: seed of the window draw")->capture_default_str()->group(calib);
  app.add_flag("--calib-float-inputs", a.job.calib_float_inputs,
               "Text: every layer's inputs from the float model, not from the quantized earlier blocks (for comparison)")
      ->group(calib);
  app.add_flag("--calib-bf16-states", a.job.calib_bf16_states,
               "Text: keep the windows' hidden states between blocks as bf16 (half the memory)")
      ->group(calib);
  app.add_flag("--allow-missing-calib", o.allow_missing_calib,
               "Round layers without calibration data to nearest (gptq) or leave them unscaled (awq) instead of failing")
      ->group(calib);

  const std::string gptq = "GPTQ (--method gptq, awq+gptq)";
  add(app, a.damp, "--damp", "Damping as a fraction of mean(diag H), raised step by step if needed", "0.01");
  a.damp.opt->group(gptq);
  add(app, a.block_size, "--block-size", "Lazy-batch width in columns", "128");
  a.block_size.opt->group(gptq);
  add(app, a.gptq_refine, "--gptq-refine",
      "Rounds of refinement after the GPTQ pass: codes moved a step and block scales/mins refitted by least squares "
      "wherever that lowers the layer's output error (docs/gptq.md); 0: the reference algorithm alone",
      "2");
  a.gptq_refine.opt->group(gptq);
  app.add_flag("--act-order", o.act_order, "Columns by decreasing Hessian diagonal (implies --static-groups); default off")->group(gptq);
  app.add_flag("--static-groups", o.static_groups, "Fit every block's grid up front on the original weights; default off")->group(gptq);
  a.weighted_fit = add_switch(app, "--weighted-fit", "--no-weighted-fit",
                              "Fit each block's grid weighting values by diag(H), as llama.cpp weights by an imatrix (the default)",
                              "Fit grids unweighted", gptq);
  app.add_flag("--compare-rtn", o.compare_rtn, "Also report round-to-nearest's output error on the calibration data")->group(gptq);

  const std::string awq = "AWQ (--method awq, awq+gptq)";
  a.awq_duo = add_switch(app, "--awq-duo-scaling", "--no-awq-duo-scaling",
                         "s = mean|x|^a / mean|w|^(1-a) (the default for awq+gptq)",
                         "s = mean|x|^a (the default for awq)", awq);
  app.add_flag("--awq-linear-objective", a.job.awq_linear_objective,
               "Calibration text: search q/k/v and gate/up scales on their own outputs, not on the attention / MLP "
               "output they feed (AutoAWQ's objective, the default)")
      ->group(awq);
  add(app, a.awq_tokens, "--awq-tokens", "Calibration tokens (evenly strided) the searches measure output errors on", "512");
  a.awq_tokens.opt->group(awq);
  a.awq_clip = add_switch(app, "--awq-clip", "--no-awq-clip",
                          "Search per-group clipping bounds (the default for awq)",
                          "No clipping search (the default for awq+gptq)", awq);

  const std::string lq = "Per-tensor choices (as llama-quantize)";
  app.add_option("--tensor-type", a.tensor_types, "PATTERN=TYPE: tensors whose name matches the regex PATTERN get TYPE (repeatable; first match wins)")
      ->allow_extra_args(false)
      ->group(lq);
  app.add_option("--output-tensor-type", o.output_tensor_type, "Type of the output head (output.weight)")->group(lq);
  app.add_option("--token-embedding-type", o.token_embedding_type, "Type of the token embeddings (token_embd.weight)")->group(lq);
  app.add_flag("--leave-output-tensor", o.leave_output_tensor, "Keep the output head unquantized (its checkpoint float type)")->group(lq);
  app.add_flag("--pure", o.pure, "With a mix: every weight gets the mix's base type (no per-tensor choices)")->group(lq);
  app.add_flag("--allow-requantize", o.allow_requantize,
               "A quantized GGUF input (Q4_0, Q4_K, ...): decode it and quantize again (the roundings compound)")
      ->group(lq);
  app.add_option("--override-kv", o.override_kv,
                 "KEY=TYPE:VALUE: set a metadata key of the output, TYPE int, float, bool or str (repeatable)")
      ->allow_extra_args(false)
      ->group(lq);
  app.add_flag("--no-fallback", o.no_fallback, "Fail instead of falling back when a row length does not fit the type")->group(lq);
  app.add_option("--imatrix", a.imatrix, "Importance matrix (llama.cpp's GGUF or legacy .dat imatrix) for weighted rounding")->group(lq);
  app.add_option("--include-weights", a.include_weights, "Use the imatrix only for tensors whose name contains this (repeatable)")
      ->allow_extra_args(false)
      ->group(lq);
  app.add_option("--exclude-weights", a.exclude_weights, "Do not use the imatrix for tensors whose name contains this (repeatable)")
      ->allow_extra_args(false)
      ->group(lq);

  app.add_option("--output-format", a.job.output_format,
                 "gguf; gptq (integer grids of 2/3/4/8 bits: an AutoGPTQ / GPTQModel checkpoint directory at -o, as "
                 "transformers, vLLM and ExLlama load it); or bnb (with nf4/fp4: a transformers + bitsandbytes "
                 "checkpoint directory at -o)")
      ->capture_default_str();
  app.add_option("--split-max-size", o.split_max_size,
                 "Write a split GGUF (OUT-00001-of-0000N.gguf, as gguf-split) with at most this much tensor data per "
                 "part: 4G, 500M (powers of 1000)");
  app.add_option("--split-max-tensors", o.split_max_tensors, "Write a split GGUF with at most N tensors per part");
  app.add_option("--max-shard-size", o.max_shard_size,
                 "--output-format gptq: safetensors shards of at most this much data, with their index (as "
                 "save_pretrained)")
      ->capture_default_str();
  const std::string gates = "Quality gates (exit 3 when one fails; the output is kept)";
  add(app, a.max_ppl_increase, "--max-ppl-increase", "Largest relative perplexity increase over the float model (0.05: 5%)", "none");
  a.max_ppl_increase.opt->group(gates);
  add(app, a.max_kl, "--max-kl", "Largest mean KL divergence from the float model's next-token distribution (nats)", "none");
  a.max_kl.opt->group(gates);
  add(app, a.min_top1, "--min-top1", "Smallest fraction of positions where the output's top token is the float model's", "none");
  a.min_top1.opt->group(gates);
  app.add_option("--eval-text", a.gates.eval_text, "The evaluation text the gates measure on (as quantize eval --text)")->group(gates);
  app.add_option("--eval-ctx", a.gates.ctx, "Gates: tokens per chunk")->capture_default_str()->group(gates);
  app.add_option("--eval-chunks", a.gates.chunks, "Gates: at most this many chunks (0: all)")->capture_default_str()->group(gates);
  app.add_option("-t,--threads", o.threads, "Worker threads (default: all cores)");
  app.add_option("--json", a.json, "Write the machine-readable report to FILE ('-': stdout, the human lines then go to stderr)");
  app.add_flag("--dry-run", a.job.dry_run, "Print the per-tensor plan and the output size; write nothing (no --calib needed)");
  app.add_flag("-f,--force", a.job.force, "Overwrite an existing output file");
}

void finish_quantize_args(QuantizeArgs& a) {
  QuantizeOptions& o = a.job.options;
  check_not_llama_quantize_form(a.inputs, !a.output.empty());
  set_method(o, a.method);
  o.bits = a.bits.get();
  o.group_size = a.group_size.get();
  o.symmetric = a.symmetric.get();
  o.double_quant = a.double_quant.get();
  o.damp = a.damp.get();
  o.gptq_weighted_fit = a.weighted_fit.get();
  o.block_size = a.block_size.get();
  o.gptq_refine = a.gptq_refine.get();
  o.awq_tokens = a.awq_tokens.get();
  o.awq_clip = a.awq_clip.get();
  o.awq_duo_scaling = a.awq_duo.get();
  for (const auto& s : a.tensor_types) o.tensor_types.push_back(parse_tensor_type_override(s));
  o.include_weights = a.include_weights;
  o.exclude_weights = a.exclude_weights;
  a.job.inputs.assign(a.inputs.begin(), a.inputs.end());
  a.job.output = a.output;
  a.job.calib.assign(a.calib.begin(), a.calib.end());
  a.job.imatrix = a.imatrix;
  a.gates.max_ppl_increase = a.max_ppl_increase.get();
  a.gates.max_kl = a.max_kl.get();
  a.gates.min_top1 = a.min_top1.get();
  validate_quality_gates(a.gates, "quality gates");
  if (a.gates.any() && a.job.output_format != "gguf")
    throw UsageError("quality gates evaluate a GGUF output; --output-format " + a.job.output_format + " has none");
}

}  // namespace qz::cli
