#!/usr/bin/env bash
# Instructions per message of each stage of the replay pipeline, counted by cachegrind:
# exact and repeatable where timings drift (shared or virtual hosts).
#
#   bench-harness/scripts/stage-instructions.sh [STAGE...]
#
# Each stage of `examples/stage_work.rs` runs twice, over 2 and 12 passes of the bundled
# session; the difference of the two counts over the difference of the messages takes the
# start-up cost out. Needs valgrind. Counts move by several percent when the code is laid out
# differently (another build directory, an unrelated change nearby): compare builds of the
# same tree, and read changes under about 5 % as noise.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release -q -p mdbus-bench-harness --example stage_work
bin="${CARGO_TARGET_DIR:-target}/release/examples/stage_work"
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(decode read apply service service-no-levels poll publish)
count() { # stage passes -> "instructions messages"
  local out
  out=$(valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$bin" "$1" "$2" 2>&1)
  local ir msgs
  ir=$(sed -n 's/.*I *refs: *//p' <<<"$out" | tr -d ,)
  msgs=$(sed -n 's/^messages \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$ir" ] && [ -n "$msgs" ] || { echo "stage $1: no count in:" >&2; echo "$out" >&2; exit 1; }
  echo "$ir $msgs"
}
printf '%-18s %12s\n' stage instr/msg
for s in "${stages[@]}"; do
  read -r i1 m1 < <(count "$s" 2)
  read -r i2 m2 < <(count "$s" 12)
  awk -v s="$s" -v i1="$i1" -v i2="$i2" -v m1="$m1" -v m2="$m2" \
    'BEGIN { printf "%-18s %12.0f\n", s, (i2 - i1) / (m2 - m1) }'
done
