#!/bin/bash
# test_coco.sh — `moda label` end to end against real moda-label processes:
#   import DIR (a read-only ../shared/data/cl domain) -> export COCO A -> import A into a fresh
#   store -> export B: A and B must be identical (JSON bytes and every image file), the images
#   must be the source files byte for byte, split.txt's test samples must be holdout, a second
#   import must store nothing new, and a hostile COCO file must be refused without harming
#   the service. Prints import speed.
# Usage: test_coco.sh MODA_BIN MODA_LABEL_BIN DOMAIN_DIR SCRATCH_DIR
set -u
MODA=$1; LABEL=$2; SRC=$3; OUT=$4
DOMAIN=$(basename "$SRC")
rm -rf "$OUT"; mkdir -p "$OUT"
fail=0
check() { if eval "$1"; then :; else echo "FAIL: $2" >&2; fail=1; fi; }
SOCK=/tmp/moda-label-coco-$$
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -f "$SOCK"-*.sock; }
trap cleanup EXIT
start() { # $1 data dir, $2 tag
    "$LABEL" --data "$1" --bind "ipc://$SOCK-$2.sock" --hard-case-bind "ipc://$SOCK-$2-hc.sock" --log-level error &
    pids+=($!)
    for _ in $(seq 100); do "$MODA" health "ipc://$SOCK-$2.sock" --timeout-ms 200 >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "FAIL: moda-label did not come up" >&2; exit 1
}
start "$OUT/db1" one
E1="--endpoint ipc://$SOCK-one.sock --timeout-ms 20000"
out=$(timeout 120 "$MODA" label import "$SRC" $E1 --json) || { echo "FAIL: import DIR" >&2; exit 1; }
echo "import DIR: $out"
n=$(ls "$SRC/images" | wc -l)
check "echo '$out' | grep -q '\"stored\":$n,'" "import stored all $n samples"
out2=$(timeout 120 "$MODA" label import "$SRC" $E1 --json)
check "echo '$out2' | grep -q '\"stored\":0,\"duplicate\":$n,'" "second import stores nothing new"
timeout 60 "$MODA" label export --coco "$OUT/a/coco.json" $E1 >/dev/null || { echo "FAIL: export A" >&2; exit 1; }
# the exported images are the source files byte for byte
for f in "$SRC"/images/*; do
    cmp -s "$f" "$OUT/a/images/$DOMAIN/$(basename "$f")" || { echo "FAIL: image $(basename "$f") differs" >&2; fail=1; break; }
done
# test samples of split.txt are holdout, train samples train
holdout=$(grep -o '"split":"holdout","camera_id"' "$OUT/a/coco.json" | wc -l)
tests=$(grep -c ' test$' "$SRC/split.txt")
check "[ $holdout -eq $tests ]" "holdout count $holdout == test lines $tests"

start "$OUT/db2" two
E2="--endpoint ipc://$SOCK-two.sock --timeout-ms 20000"
out=$(timeout 120 "$MODA" label import --coco "$OUT/a/coco.json" $E2 --json) || { echo "FAIL: import COCO" >&2; exit 1; }
echo "import COCO: $out"
timeout 60 "$MODA" label export --coco "$OUT/b/coco.json" $E2 >/dev/null || { echo "FAIL: export B" >&2; exit 1; }
check "cmp -s '$OUT/a/coco.json' '$OUT/b/coco.json'" "export A == export B (JSON bytes)"
check "diff -r -q '$OUT/a/images' '$OUT/b/images' >/dev/null" "export A images == export B images"

# masks in the file decode to the source masks (independent check with numpy/PIL)
/usr/bin/python3 - "$OUT/a/coco.json" "$SRC" <<'PY' || fail=1
import json, sys, os
import numpy as np
from PIL import Image
doc = json.load(open(sys.argv[1])); src = sys.argv[2]
def decode(s, h, w):
    runs, p = [], 0
    while p < len(s):
        x = k = 0; more = True
        while more:
            c = ord(s[p]) - 48; x |= (c & 0x1f) << (5 * k); more = bool(c & 0x20); p += 1; k += 1
            if not more and (c & 0x10): x |= -1 << (5 * k)
        if len(runs) > 2: x += runs[-2]
        runs.append(x)
    return np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape((h, w), order="F")
imgs = {im["id"]: im for im in doc["images"]}
bad = 0
for a in doc["annotations"]:
    im = imgs[a["image_id"]]; h, w = a["segmentation"]["size"]
    m = decode(a["segmentation"]["counts"], h, w)
    ref = np.asarray(Image.open(os.path.join(src, "masks", os.path.splitext(os.path.basename(im["file_name"]))[0] + ".png"))) > 0
    if ref.shape != m.shape or (ref != m).any() or int(m.sum()) != a["area"]: bad += 1
print("coco masks == source masks: %d of %d" % (len(doc["annotations"]) - bad, len(doc["annotations"])))
sys.exit(1 if bad or not doc["annotations"] else 0)
PY

# hostile COCO files are refused with a message; the service keeps serving
mkdir -p "$OUT/bad/images"
cp "$(ls "$SRC"/images/* | head -1)" "$OUT/bad/images/x.jpg"
echo '{"images":[{"id":1,"file_name":"../../etc/passwd","width":2,"height":2}],"annotations":[]}' > "$OUT/bad/t1.json"
echo '{"images":[{"id":1,"file_name":"x.jpg","width":3,"height":3,"domain":"d"}],"annotations":[{"id":1,"image_id":1,"segmentation":{"size":[3,3],"counts":"zz"}}]}' > "$OUT/bad/t2.json"
echo '{"images":[{"id":1,"file_name":"x.jpg","width":3,"height":3,"domain":"d"}],"annotations":[{"id":1,"image_id":1,"segmentation":{"size":[3,3],"counts":"9"}}]}' > "$OUT/bad/t3.json"
echo '{"images":[' > "$OUT/bad/t4.json"
for t in 1 2 3 4; do
    msg=$(timeout 30 "$MODA" label import --coco "$OUT/bad/t$t.json" $E2 2>&1); rc=$?
    check "[ $rc -ne 0 ]" "hostile COCO file t$t refused"
    echo "t$t refused: $msg"
done
check "'$MODA' health 'ipc://$SOCK-two.sock' --timeout-ms 2000 >/dev/null" "service still healthy"

# operator commands: relabel sample 1 into a new domain with a PNG mask, reject sample 2
first=$(ls "$SRC/masks" | head -1)
"$MODA" label submit 1 --mask "$SRC/masks/$first" --domain relabeled $E2 --actor tester || { echo "FAIL: submit" >&2; fail=1; }
check "'$MODA' label get 1 --json --out '$OUT/one.img' $E2 | grep -q '\"domain\":\"relabeled\"'" "get shows the new domain"
check "[ -s '$OUT/one.img' ]" "get --out wrote the image"
"$MODA" label reject 2 --reason test $E2 >/dev/null || { echo "FAIL: reject" >&2; fail=1; }
doms=$("$MODA" label domains --json $E2)
echo "domains after relabel/reject: $doms"
check "echo '$doms' | grep -q '\"name\":\"$DOMAIN\",\"labels\":$((n - 2)),'" "two labels left $DOMAIN"
check "echo '$doms' | grep -q '\"name\":\"relabeled\",\"labels\":1,'" "relabeled domain has one label"
check "! '$MODA' label submit 99999 --mask '$SRC/masks/$first' --domain x $E2 2>/dev/null" "label for an unknown sample refused"
check "! '$MODA' label submit 3 --mask '$OUT/one.img' --domain x $E2 2>/dev/null" "wrong-size mask refused"
[ $fail -eq 0 ] && echo "test_coco: all checks passed"
exit $fail
