#!/usr/bin/env bash
# GPTQ on one 4096 x 4096 layer with 4096 calibration tokens, end to end through the CLI (issue 17): seconds, where
# they went (the report's gptq.seconds) and peak memory against the bound 2 x (layer as float32 + its Hessian in
# double) + 256 MiB.
#   bash bench/gptq_layer.sh [BUILD_DIR] [THREADS] [REPEATS]
set -euo pipefail
B=${1:-build}
THREADS=${2:-2}
REPEATS=${3:-3}
DIR=/tmp/qz-bench-gptq-layer
[ -f "$DIR/calib.safetensors" ] || "$B/bench/make_gptq_layer" "$DIR" > /dev/null
echo "bound: 2 x (64 MiB + 128 MiB) + 256 MiB = 640 MiB"
for _ in $(seq "$REPEATS"); do
  /usr/bin/time -f "%e %M" -o "$DIR/time" "$B/tools/quantize" "$DIR/layer.safetensors" -o "$DIR/out.gguf" --method gptq \
    --bits 4 --calib "$DIR/calib.safetensors" -t "$THREADS" -f -q --json "$DIR/report.json"
  read -r secs rss < "$DIR/time"
  phases=$(node -e "const r=require('$DIR/report.json'); const s=r.tensors[0].gptq.seconds;
    console.log(Object.entries(s).map(([k,v])=>k+' '+v.toFixed(2)+' s').join(', '))")
  echo "  $secs s, peak RSS $((rss / 1024)) MiB ($phases)"
done
rm -f "$DIR/out.gguf" "$DIR/time"
