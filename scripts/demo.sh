#!/usr/bin/env bash
# demo.sh — the README's first command ends here (`./moda.sh demo`, after setup): segment the
# generated example image with one click and write the mask and an overlay into ./out/.
#
#   scripts/demo.sh            uses ${MODA_BUILD_DIR:-build}/bin/moda and the default model
#
# Outputs (git-ignored): out/example.png, out/example_mask.png, out/example_overlay.png,
# out/box_mask.png, out/box_overlay.png.
#
# Then the live pipeline (docs/e2e.md): `moda up` starts the five services, a camera streams
# (the nuclei test images of ../shared/data/cl when present, else a synthetic camera),
# `moda status` is shown every MODA_DEMO_STATUS_S (15) seconds; with the data present, 4 + 2
# nuclei labels are imported so moda-train runs a job (MODA_DEMO_EPOCHS, 8) and its gate
# decision is printed (and infer's switch to the promoted version); after MODA_DEMO_SECONDS
# (240, 0 skips the live part) or when the job ended,
# `moda up` is stopped with SIGTERM (Ctrl-C stops it too). Data and logs: out/moda-demo/.
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

# ---- the live pipeline: moda up for a bounded time
LIVE_S=${MODA_DEMO_SECONDS:-240}
EPOCHS=${MODA_DEMO_EPOCHS:-8}
[ "$LIVE_S" -gt 0 ] || exit 0
STATUS_S=${MODA_DEMO_STATUS_S:-15}
DEMO=$OUT/moda-demo
RUN=/tmp/moda-demo-$(id -u)
NUC=$ROOT/../shared/data/cl/nuclei
rm -rf "$DEMO"
mkdir -p "$DEMO"
CAMERA=synthetic:320x240
LABELS=
if [ -f "$NUC/split.txt" ]; then
  # camera: 3 nuclei test images; labels: 4 train + 2 holdout others (links, not copies)
  mkdir -p "$DEMO/camera" "$DEMO/labels/nuclei/images" "$DEMO/labels/nuclei/masks"
  awk '$2=="train"' "$NUC/split.txt" | head -4 >"$DEMO/labels/nuclei/split.txt"
  awk '$2=="test"' "$NUC/split.txt" | head -2 >>"$DEMO/labels/nuclei/split.txt"
  while read -r id _; do
    ln -s "$(ls "$NUC"/images/"$id".*)" "$DEMO/labels/nuclei/images/"
    ln -s "$NUC/masks/$id.png" "$DEMO/labels/nuclei/masks/"
  done <"$DEMO/labels/nuclei/split.txt"
  awk '$2=="test"' "$NUC/split.txt" | sed -n 3,5p | while read -r id _; do
    ln -s "$(ls "$NUC"/images/"$id".*)" "$DEMO/camera/"
  done
  CAMERA=folder:$DEMO/camera
  LABELS=$DEMO/labels/nuclei
fi
echo
echo "--- live pipeline: moda up (camera $CAMERA) for at most ${LIVE_S} s"
"$BIN/moda" up --data "$DEMO" --run-dir "$RUN" --camera "$CAMERA" --camera-id cam0 --fps 0.5 \
  --infer-args "--min-iou 0.9" \
  --train-args "--min-new 6 --epochs $EPOCHS --replay 2 --selector-epochs 2 --max-holdout 2 --poll-ms 1000 --no-fixed-loss" \
  >"$DEMO/up.out" 2>&1 &
UP=$!
stop_up() {
  if kill -0 "$UP" 2>/dev/null; then
    kill -TERM "$UP" 2>/dev/null || true
    wait "$UP" 2>/dev/null || true
  fi
}
trap stop_up EXIT INT TERM
for _ in $(seq 1 240); do
  "$BIN/moda" status --run-dir "$RUN" --timeout-ms 1000 >/dev/null 2>&1 && break
  kill -0 "$UP" 2>/dev/null || { cat "$DEMO/up.out"; echo "moda up failed (logs: $DEMO/logs)"; exit 1; }
  sleep 0.5
done
sleep 1 # the summary lines of moda up
cat "$DEMO/up.out"
if [ -n "$LABELS" ]; then
  echo "--- importing 4 train + 2 holdout nuclei labels: moda-train starts a job"
  "$BIN/moda" label import "$LABELS" --endpoint "ipc://$RUN/label.sock" || true
fi
T_END=$((SECONDS + LIVE_S))
while [ $SECONDS -lt $T_END ]; do
  sleep "$STATUS_S"
  echo "--- moda status ($((SECONDS)) s)"
  "$BIN/moda" status --run-dir "$RUN" --timeout-ms 2000 || true
  if grep -qE "event=(version_put|job_refused|job_failed)" "$DEMO/logs/train.log" 2>/dev/null; then
    echo "--- training decision (moda-train log):"
    grep -hE "event=(job_passed|version_put|job_refused|job_failed)" "$DEMO/logs/train.log" | sed 's/^/  /' | cut -c1-400
    "$BIN/moda" registry list --endpoint "ipc://$RUN/registry.sock" || true
    if grep -q "event=version_put" "$DEMO/logs/train.log"; then
      # infer follows the promote: show the first Results' bank version
      for _ in $(seq 1 30); do
        "$BIN/moda" health "ipc://$RUN/infer.sock" --json 2>/dev/null | grep -q '"bank_version": *[1-9]' && break
        sleep 1
      done
      echo "--- moda status after the promote"
      "$BIN/moda" status --run-dir "$RUN" --timeout-ms 2000 | grep -E "^infer:|^active bank|^  cam0" || true
    fi
    break
  fi
done
echo "--- stopping moda up (SIGTERM)"
stop_up
trap - EXIT INT TERM
tail -2 "$DEMO/up.out"
echo "live pipeline data and logs in $DEMO (logs/<service>.log)"
