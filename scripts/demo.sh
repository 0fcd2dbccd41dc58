#!/usr/bin/env bash
# demo.sh — the README's first command ends here (`./moda.sh demo`, after setup): segment the
# generated example image with one click and write the mask and an overlay into ./out/.
#
#   scripts/demo.sh            uses ${MODA_BUILD_DIR:-build}/bin/moda and the default model
#
# Outputs (git-ignored): out/example.png, out/example_mask.png, out/example_overlay.png,
# out/box_mask.png, out/box_overlay.png.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MODA_BUILD_DIR:-$ROOT/build}/bin
OUT=$ROOT/out
"$BIN/moda" --version
mkdir -p "$OUT"
"$ROOT/scripts/make_example.sh" "$OUT/example.png"
echo "--- one foreground click on the disk"
"$BIN/moda" segment --image "$OUT/example.png" --point 270,300,1 \
  --out "$OUT/example_mask.png" --overlay "$OUT/example_overlay.png"
echo "--- a box around the rounded rectangle"
"$BIN/moda" segment --image "$OUT/example.png" --box 470,120,710,280 \
  --out "$OUT/box_mask.png" --overlay "$OUT/box_overlay.png"
echo
echo "demo outputs in $OUT:"
echo "  example.png          the generated input image (800x600)"
echo "  example_mask.png     mask from the click at (270,300), 0/255"
echo "  example_overlay.png  the mask drawn over the image"
echo "  box_mask.png / box_overlay.png   the same for the box prompt"
