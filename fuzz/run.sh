#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each (default 600), one after
# another, on a stable toolchain: libFuzzer's coverage instrumentation needs no nightly,
# only the sanitizer does, so it is off. New inputs go to corpus/<target>/ (not in git),
# crashes to artifacts/<target>/. Needs `cargo install cargo-fuzz` and a C++ compiler.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-600}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(patch conditions config)
fi
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
    -dict="dict/$target.dict" -max_total_time="$seconds" -print_final_stats=1 \
    2>&1 | tee "fuzz-$target.log"
done
