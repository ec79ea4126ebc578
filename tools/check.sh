#!/usr/bin/env bash
# The sanitizer pass and a short fuzz pass, from one clang build (build-check/) with AddressSanitizer +
# UndefinedBehaviorSanitizer and libFuzzer's coverage in everything (-DQUANTIZE_FUZZ=ON): the test programs and the
# fuzz targets share the instrumented library. A sanitizer report fails the test or target that made it.
#
#   bash tools/check.sh                     set-up, build, sanitizer tests, fuzz (what .ci/run does after the tests)
#   bash tools/check.sh build sanitize      only those phases, in that order (setup | build | sanitize | fuzz)
#
# The sanitizer tests are every test but the `model` label (whole real models through whole methods: left to the
# plain Release run of the README's test command); tests that need node-llama-cpp's libllama skip, saying so (the
# library is not built with the sanitizers). Each fuzz target runs QZ_FUZZ_SECONDS (default 15) on its seeds;
# tests/fuzz/README.md has the long campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-check
phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(setup build sanitize fuzz)
for phase in "${phases[@]}"; do
  case "$phase" in
    setup) bash tools/setup.sh --fuzz ;;
    build)
      # -O1 with line tables: the sanitizers' usual trade between build time, run time and readable reports.
      CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only -DNDEBUG" -DQUANTIZE_FUZZ=ON \
        -DQZ_FUZZ_SECONDS="${QZ_FUZZ_SECONDS:-15}" >/dev/null
      cmake --build "$dir" ;;
    sanitize)
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --test-dir "$dir" -LE 'model|fuzz' --output-on-failure -j2 --timeout 900 ;;
    fuzz) ctest --test-dir "$dir" -L fuzz --output-on-failure -j2 --timeout 300 ;;
    *) echo "tools/check.sh: unknown phase '$phase' (setup, build, sanitize, fuzz)" >&2; exit 2 ;;
  esac
done
