#!/bin/bash
# run_clbench.sh — `moda cl-bench` end to end on a tiny configuration, and its argument errors.
#
#   run_clbench.sh MODA MODEL DATA WORK PYTHON
#
# Two domains (magtile, nuclei), 3 train and 2 test images each, 1 epoch, all four methods,
# both prompt modes. Checks the JSON against the protocol's definitions, recomputed here from
# the IoU matrices: Last = mean of the last row, Avg = mean over steps of the row means,
# FF = mean over old domains of (best earlier IoU - last IoU); zero-shot rows are constant
# (FF 0); naive's first row equals MoDA's (the same training, reused); joint has only the
# last row; selection accuracy is a percentage; every method lists both prompt modes.
# Then: an unknown method, a missing domain folder and a single domain are refused with
# exit 2 and a message naming the problem. Exit 77 when the model file is missing.
set -euo pipefail
moda=$1 model=$2 data=$3 work=$4 py=$5
if [ ! -f "$model" ]; then echo "SKIP: no model at $model"; exit 77; fi
rm -rf "$work"; mkdir -p "$work"
"$moda" cl-bench --model "$model" --data "$data/cl" --domains magtile,nuclei --max-train 3 \
  --max-test 2 --epochs 1 --threads 2 --quiet --out "$work/r.json" | tee "$work/out.txt"
grep -q "Last-IoU" "$work/out.txt"
"$py" - "$work/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
fail = 0
def check(c, msg):
    global fail
    if not c:
        print("FAIL:", msg); fail += 1
assert r["domains"] == ["magtile", "nuclei"]
T = 2
for m in ("zeroshot", "naive", "joint", "moda"):
    for p in ("box", "auto"):
        x = r["methods"][m][p]
        if m == "joint":
            row = x["per_domain_iou"]
            check(len(row) == T and "ff_iou" not in x, f"{m}/{p}: joint has only the last row")
            check(abs(x["last_iou"] - sum(row) / T) < 1e-9, f"{m}/{p}: last_iou")
            continue
        a = x["iou_matrix"]
        check([len(v) for v in a] == [1, 2], f"{m}/{p}: triangular matrix")
        check(all(0 <= v <= 100 for row in a for v in row), f"{m}/{p}: IoU in percent")
        check(abs(x["last_iou"] - sum(a[-1]) / T) < 1e-9, f"{m}/{p}: last_iou")
        check(abs(x["avg_iou"] - (a[0][0] + sum(a[1]) / 2) / 2) < 1e-9, f"{m}/{p}: avg_iou")
        check(abs(x["ff_iou"] - (a[0][0] - a[1][0])) < 1e-9, f"{m}/{p}: ff_iou")
        if m == "zeroshot":
            check(a[0][0] == a[1][0] and x["ff_iou"] == 0, f"{m}/{p}: zero-shot cannot forget")
        if m == "moda":
            check(0 <= x["selection_accuracy"] <= 100, "selection accuracy in percent")
            check(len(x["selection_accuracy_per_domain"]) == T, "per-domain selection")
            check("oracle_last_iou" in x, "oracle_last_iou")
    check(r["methods"]["naive"]["box"]["iou_matrix"][0] == r["methods"]["moda"]["box"]["iou_matrix"][0],
          "naive's first step is MoDA's first adapter")
check(r["seconds"] > 0, "seconds")
print("cl-bench JSON consistent:", {m: round(r["methods"][m]["box"]["last_iou"], 1) for m in r["methods"]})
sys.exit(1 if fail else 0)
PY
expect_err() { # expect_err PATTERN ARGS...: exit 2 and PATTERN on stderr
  local pat=$1; shift
  if "$moda" cl-bench --model "$model" "$@" > /dev/null 2> "$work/err.txt"; then
    echo "FAIL: accepted: $*"; exit 1
  fi
  st=$?
  grep -q "$pat" "$work/err.txt" || { echo "FAIL: no '$pat' in: $(cat "$work/err.txt")"; exit 1; }
}
expect_err "unknown method 'nope'" --data "$data/cl" --domains magtile,nuclei --methods moda,nope
expect_err "no_such_domain" --data "$data/cl" --domains magtile,no_such_domain
expect_err "2..16" --data "$data/cl" --domains magtile
echo "argument errors refused"
