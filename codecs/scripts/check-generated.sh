#!/usr/bin/env bash
# Exits non-zero if the committed generated code differs from what flatc 25.12.19 makes of the
# schemas (someone edited a schema without running gen-flatbuffers.sh, or edited generated code).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
require_flatc

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

status=0
for pair in "${SCHEMAS[@]}"; do
  read -r schema outdir <<<"$pair"
  name="$(basename "${schema%.fbs}")_generated.rs"
  generate "$schema" "$tmp"
  if [ ! -f "$outdir/$name" ]; then
    echo "MISSING: $outdir/$name (run codecs/scripts/gen-flatbuffers.sh)" >&2
    status=1
  elif ! diff -u "$outdir/$name" "$tmp/$name"; then
    echo "STALE: $outdir/$name differs from what $schema generates" \
      "(run codecs/scripts/gen-flatbuffers.sh)" >&2
    status=1
  else
    echo "ok: $outdir/$name matches $schema"
  fi
  rm -f "$tmp/$name"
done
exit $status
