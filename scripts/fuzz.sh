#!/usr/bin/env bash
# Fuzz the parsers of hostile input with cargo fuzz (libFuzzer):
#   scripts/fuzz.sh [TARGET [SECONDS]]     targets: archive config webhook
# With no TARGET, each runs for SECONDS (default 60). New inputs go to
# fuzz/work/<target>; crashes to fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# libFuzzer's instrumentation needs unstable flags; no sanitizer keeps it on
# the stable toolchain this project builds with.
export RUSTC_BOOTSTRAP=1

targets=(archive config webhook)
[ $# -ge 1 ] && targets=("$1")
seconds="${2:-60}"
for target in "${targets[@]}"; do
  mkdir -p "work/$target" "corpus/$target"
  echo "==> fuzzing $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30
done
