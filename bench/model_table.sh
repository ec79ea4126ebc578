#!/usr/bin/env bash
# The model-level table (docs/calibration.md, "Measuring quality" in the guide): for one model, llama.cpp's own files
# (our round-to-nearest is byte-identical to llama-quantize's, our imatrix from text is llama-imatrix's statistic)
# and each method of ours, all from the same calibration text, judged by the engine's KL divergence from the F32
# file on text not used for calibration (llama-perplexity's protocol with --ctx CTX). Prints a Markdown table: bytes,
# mean KL, p99 KL, top-1 agreement, perplexity and the seconds each file took to make.
#   bench/model_table.sh QUANTIZE_BIN MODEL_DIR CALIB_TEXT EVAL_TEXT CTX WORK_DIR   (needs python3 and bc)
set -euo pipefail
bin=$1 model=$2 calib=$3 eval=$4 ctx=$5 work=$6
mkdir -p "$work"
q() { "$bin" "$@" -q; }
q "$model" -o "$work/f32.gguf" --type F32 --force
q imatrix "$model" --calib "$calib" -c "$ctx" -o "$work/imatrix.gguf" --force
echo "| file | bytes | mean KL | p99 KL | top-1 | PPL | seconds to make |"
echo "|---|---|---|---|---|---|---|"
row() {
  local name=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  q "$model" -o "$work/out.gguf" --force -t 2 "$@"
  t1=$(date +%s.%N)
  "$bin" eval "$work/out.gguf" --text "$eval" --tokenizer "$model" --ctx "$ctx" --base "$work/f32.gguf" --json - 2>/dev/null |
    python3 -c 'import json,sys,os; j=json.load(sys.stdin); k=j["kl"]
print("| %s | %d | %.6f | %.4f | %.2f%% | %.4f | %.1f |" % (sys.argv[1], os.path.getsize(sys.argv[2]), k["mean"], k["p99"],
      100*k["top1_agreement"], j["ppl"], float(sys.argv[3])))' "$name" "$work/out.gguf" "$(echo "$t1 - $t0" | bc)"
}
row "Q4_0 (llama.cpp's)" --type Q4_0
row "Q4_0 imatrix (llama.cpp's)" --type Q4_0 --imatrix "$work/imatrix.gguf"
row "Q4_K_M (llama.cpp's)" --type Q4_K_M
row "Q4_K_M imatrix (llama.cpp's)" --type Q4_K_M --imatrix "$work/imatrix.gguf"
row "GPTQ Q4_0" --method gptq --type Q4_0 --calib "$calib"
row "AWQ Q4_0" --method awq --type Q4_0 --calib "$calib"
row "AWQ Q4_0, linear objective" --method awq --type Q4_0 --calib "$calib" --awq-linear-objective
row "AWQ+GPTQ Q4_0" --method awq+gptq --type Q4_0 --calib "$calib"
row "GPTQ Q4_K_M" --method gptq --type Q4_K_M --calib "$calib"
row "AWQ+GPTQ Q4_K_M" --method awq+gptq --type Q4_K_M --calib "$calib"
