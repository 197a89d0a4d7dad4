#!/usr/bin/env bash
# Regenerates the committed Rust code from the FlatBuffers schemas with flatc 25.12.19.
# Run after every schema change and commit the result; CI runs check-generated.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
require_flatc

for pair in "${SCHEMAS[@]}"; do
  read -r schema outdir <<<"$pair"
  generate "$schema" "$outdir"
  echo "generated $outdir/$(basename "${schema%.fbs}")_generated.rs from $schema"
done
