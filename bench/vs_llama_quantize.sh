#!/usr/bin/env bash
# End-to-end RTN throughput against llama.cpp's llama-quantize (issue 17): the same F16 GGUF of a synthetic 6-layer
# 2048-wide LLaMA (600 MB), the same thread count, each output checked tensor by tensor against llama.cpp's.
# llama.cpp's side is llama_model_quantize from node-llama-cpp's libllama (bench_llama_quantize), the function the
# llama-quantize tool calls; outputs go to /dev/shm so that disk write-back does not decide the figures.
#   bash bench/vs_llama_quantize.sh [BUILD_DIR] [THREADS] [REPEATS]
set -euo pipefail
B=${1:-build}
THREADS=${2:-2}
REPEATS=${3:-3}
DIR=/tmp/qz-bench-vs-llama
OUT=/dev/shm/qz-bench-vs-llama
mkdir -p "$DIR" "$OUT"
if [ ! -f "$DIR/f16.gguf" ]; then
  "$B/tools/quantize" make-demo "$DIR/m" --layers 6 --hidden 2048 --intermediate 5632 --heads 16 --kv-heads 8 --vocab 4096 -q
  "$B/tools/quantize" "$DIR/m" -o "$DIR/f16.gguf" --type F16 -f -q
fi
bytes=$(stat -c %s "$DIR/f16.gguf")
cat "$DIR/f16.gguf" > /dev/null
start=$(date +%s.%N); cat "$DIR/f16.gguf" > /dev/null; end=$(date +%s.%N)
echo "input: $((bytes / 1000000)) MB F16 GGUF; cat from the page cache: $(echo "$bytes / ($end - $start) / 1000000" | bc) MB/s"
printf "%-8s %12s %12s %8s  %s\n" type llama.cpp quantize speedup tensors
for type in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
  best_l=1000000; best_q=1000000
  for _ in $(seq "$REPEATS"); do
    rm -f "$OUT"/*.gguf
    l=$("$B/bench/bench_llama_quantize" quantize "$DIR/f16.gguf" "$OUT/llama.gguf" "$type" "$THREADS" 2>/dev/null | tail -1)
    [ "$l" = "" ] && { echo "skipped: llama.cpp's libllama is not installed (tools/setup.sh)"; exit 0; }
    rm -f "$OUT/quantize.gguf"
    s=$(date +%s.%N); "$B/tools/quantize" "$DIR/f16.gguf" -o "$OUT/quantize.gguf" --type "$type" -f -q -t "$THREADS"; e=$(date +%s.%N)
    q=$(echo "$e - $s" | bc)
    best_l=$(echo "if ($l < $best_l) $l else $best_l" | bc); best_q=$(echo "if ($q < $best_q) $q else $best_q" | bc)
  done
  same=$("$B/bench/bench_llama_quantize" compare "$OUT/llama.gguf" "$OUT/quantize.gguf" | tail -1)
  printf "%-8s %10.2f s %10.2f s %7.2fx  %s (quantize: %d MB/s of input)\n" "$type" "$best_l" "$best_q" \
    "$(echo "$best_l / $best_q" | bc -l)" "$same" "$(echo "$bytes / $best_q / 1000000" | bc)"
done
rm -rf "$OUT"
