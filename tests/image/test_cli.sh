#!/usr/bin/env bash
# test_cli.sh — `moda segment` / `moda bench` refuse malformed input with the documented exit
# status (2 usage or bad prompt, 1 unreadable input) and a message naming the problem.
#   test_cli.sh MODA_BIN WORK_DIR
set -u
MODA=$1 WORK=$2
mkdir -p "$WORK"
fails=0
expect() { # expect STATUS PATTERN -- args...
  local want=$1 pat=$2; shift 3
  local out rc
  out=$("$MODA" "$@" 2>&1); rc=$?
  if [ "$rc" != "$want" ] || ! grep -qiE -- "$pat" <<<"$out"; then
    echo "FAIL: moda $* -> exit $rc (want $want), output: $out"; fails=$((fails + 1))
  else
    echo "ok: moda $* -> $rc: $(head -1 <<<"$out")"
  fi
}
"$MODA" bench example --out "$WORK/ex.png" >/dev/null || { echo "FAIL: bench example"; exit 1; }
printf 'not a weights file' >"$WORK/bad.safetensors"
# valid safetensors layout, but no SAM encoder named / an unknown one (26- and 44-byte headers)
printf '\x1a\x00\x00\x00\x00\x00\x00\x00{"__metadata__":{"a":"b"}}' >"$WORK/nometa.safetensors"
printf '\x2e\x00\x00\x00\x00\x00\x00\x00{"__metadata__":{"moda.encoder":"tinyvit_5m"}}' >"$WORK/tvempty.safetensors"
printf '\x2c\x00\x00\x00\x00\x00\x00\x00{"__metadata__":{"moda.encoder":"vit_q"}}   ' >"$WORK/vitq.safetensors"
printf '\x89PNG\r\n\x1a\n' >"$WORK/trunc.png"
: >"$WORK/empty.jpg"
# a 5000x1 gray PNG: its short side would resize to 0 pixels
"${PYTHON:-/usr/bin/python3}" - "$WORK/thin.png" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5000, 1, 8, 0, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(b"\x00" + b"\x80" * 5000)) + chunk(b"IEND", b""))
PY
IMG=$WORK/ex.png OUT=$WORK/m.png
expect 0 "usage: moda segment" -- segment --help
expect 2 "--image is required" -- segment --point 1,1,1 --out "$OUT"
expect 2 "--out is required" -- segment --image "$IMG" --point 1,1,1
expect 2 "--point 'a,b'" -- segment --image "$IMG" --point a,b --out "$OUT"
expect 2 "--point '1,2'" -- segment --image "$IMG" --point 1,2 --out "$OUT"
expect 2 "LABEL 1" -- segment --image "$IMG" --point 1,2,5 --out "$OUT"
expect 2 "--point '1,2,1,4'" -- segment --image "$IMG" --point 1,2,1,4 --out "$OUT"
expect 2 "--box" -- segment --image "$IMG" --box 1,2,3 --out "$OUT"
expect 2 "no prompt" -- segment --image "$IMG" --out "$OUT"
expect 2 "outside the 800x600 image" -- segment --image "$IMG" --point 900,10,1 --out "$OUT"
expect 2 "outside the 800x600 image" -- segment --image "$IMG" --point -1,10,1 --out "$OUT"
expect 2 "outside the 800x600 image" -- segment --image "$IMG" --box 10,10,801,20 --out "$OUT"
expect 2 "x0 <= x1" -- segment --image "$IMG" --box 50,10,20,20 --out "$OUT"
expect 2 "unknown argument" -- segment --image "$IMG" --bogus --out "$OUT"
expect 2 "needs a value" -- segment --image "$IMG" --out
expect 2 "threads" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --threads 0
expect 2 "too elongated" -- segment --image "$WORK/thin.png" --point 1,0,1 --out "$OUT"
expect 2 "need exactly 262144 bytes" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --mask-in "$WORK/bad.safetensors"
expect 1 "cannot open --mask-in" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --mask-in "$WORK/nope.f32"
expect 1 "cannot open image" -- segment --image "$WORK/nope.png" --point 1,1,1 --out "$OUT"
expect 1 "empty file" -- segment --image "$WORK/empty.jpg" --point 1,1,1 --out "$OUT"
expect 1 "corrupt PNG" -- segment --image "$WORK/trunc.png" --point 1,1,1 --out "$OUT"
expect 1 "bad.safetensors" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --model "$WORK/bad.safetensors"
expect 1 "no 'moda.encoder' metadata" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --model "$WORK/nometa.safetensors"
expect 1 "encoder 'vit_q' is not supported" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --model "$WORK/vitq.safetensors"
expect 1 "tensor 'image_encoder.*not in the weights file" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --model "$WORK/tvempty.safetensors"
expect 1 "nope.safetensors" -- segment --image "$IMG" --point 1,1,1 --out "$OUT" --model "$WORK/nope.safetensors"
expect 2 "unknown benchmark" -- bench nope
expect 2 "--iters" -- bench infer --iters 0
expect 1 "bad.safetensors" -- bench infer --model "$WORK/bad.safetensors"
[ ! -e "$OUT" ] || { echo "FAIL: a failed run left $OUT behind"; fails=$((fails + 1)); }
[ "$fails" = 0 ] && echo "test_cli: all checks passed" || { echo "test_cli: $fails failed"; exit 1; }
