#!/usr/bin/env bash
# Peak resident memory and throughput of round-to-nearest types, end to end through the CLI, on two synthetic models
# of different sizes (issue 17): peak RSS should not grow with the model (the input's pages are released tensor by
# tensor), and the rate should approach reading the input from the page cache (`cat input > /dev/null`).
#   bash bench/memory.sh [QUANTIZE_BIN] [WORK_DIR] [THREADS]
set -euo pipefail
BIN=${1:-build/tools/quantize}
DIR=${2:-/tmp/qz-bench-memory}
THREADS=${3:-2}
mkdir -p "$DIR"
shape="--hidden 2048 --intermediate 5632 --heads 16 --kv-heads 8 --vocab 4096"
for spec in "small 2" "big 8"; do
  set -- $spec
  if [ ! -f "$DIR/$1/config.json" ]; then
    "$BIN" make-demo "$DIR/$1" --layers "$2" $shape -q
    rm -f "$DIR/$1/calib.safetensors"
  fi
done
largest=$((5632 * 2048 * 4))
echo "largest tensor as float32: $((largest / 1048576)) MiB; bound 2 x that + 256 MiB = $((2 * largest / 1048576 + 256)) MiB"
for m in small big; do
  bytes=$(cat "$DIR/$m"/*.safetensors | wc -c)
  cat "$DIR/$m"/*.safetensors > /dev/null  # warm the page cache
  start=$(date +%s.%N); cat "$DIR/$m"/*.safetensors > /dev/null; end=$(date +%s.%N)
  echo "$m: $((bytes / 1000000)) MB of safetensors; cat from the page cache: $(echo "$bytes / ($end - $start) / 1000000" | bc) MB/s"
  for type in Q8_0 Q4_0 Q4_K_M; do
    /usr/bin/time -f "%M %e" -o "$DIR/time" "$BIN" "$DIR/$m" -o "$DIR/out.gguf" --type "$type" -f -q -t "$THREADS"
    read -r rss secs < "$DIR/time"
    echo "  $type: peak RSS $((rss / 1024)) MiB, $secs s, $(echo "$bytes / $secs / 1000000" | bc) MB/s of input"
  done
done
rm -f "$DIR/out.gguf" "$DIR/time"
