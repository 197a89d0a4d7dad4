# Shared by gen-flatbuffers.sh and check-generated.sh (sourced, not run).
# Every schema compiled into committed Rust code, as "schema output-directory" pairs, relative to
# the codecs crate root. The frozen v1 schema under tests/evolution is compiled too, so that the
# check proves its committed code is what flatc makes of it (its .fbs must never change).
FLATC_VERSION="25.12.19"
SCHEMAS=(
  "schema/mdbus.fbs schema/src/generated"
  "tests/evolution/v1/mdbus_v1.fbs tests/evolution/v1"
)

require_flatc() {
  if ! command -v flatc >/dev/null 2>&1; then
    echo "error: flatc not found; run codecs/scripts/install-flatc.sh" >&2
    exit 2
  fi
  local got
  got="$(flatc --version)"
  if [ "$got" != "flatc version $FLATC_VERSION" ]; then
    echo "error: '$got' found, the flatbuffers crate needs flatc $FLATC_VERSION" \
      "(run codecs/scripts/install-flatc.sh)" >&2
    exit 2
  fi
}

# generate SCHEMA OUTDIR: writes <schema stem>_generated.rs into OUTDIR.
generate() {
  flatc --rust --require-explicit-ids -o "$2" "$1"
}
