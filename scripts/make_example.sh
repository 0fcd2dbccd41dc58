#!/usr/bin/env bash
# make_example.sh — write the demo's example image: shaded shapes (a lit disk, a rounded
# rectangle, a triangle) on a brushed-metal texture, drawn procedurally by `moda bench
# example` (tools/moda/cmd_bench.c). No third-party pixels. Deterministic.
#   scripts/make_example.sh [OUT.png]     (default: out/example.png)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MODA_BUILD_DIR:-$ROOT/build}/bin
OUT=${1:-$ROOT/out/example.png}
mkdir -p "$(dirname "$OUT")"
"$BIN/moda" bench example --out "$OUT"
