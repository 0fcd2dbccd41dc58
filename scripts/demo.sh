#!/usr/bin/env bash
# demo.sh — the README's first command ends here: show the installed tools work.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MODA_BUILD_DIR:-$ROOT/build}/bin
"$BIN/moda" --version
