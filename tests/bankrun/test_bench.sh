#!/bin/sh
# test_bench.sh MODA PYTHON DATA_CL BANK_DIR OUT — `moda bench pipeline` end to end on the
# 2-domain fixture bank (selector in both the bare loop and moda-infer), tiny run: the JSON
# has every field, rates and latencies are positive and finite, p50 <= p99, the swap produced
# a Result with the new version, nothing was dropped (queues sized for the run).
moda=$1 py=$2 cl=$3 bank=$4 out=$5
mkdir -p "$out"
"$moda" bench pipeline --images "$cl/magtile/images" --frames 2 --rounds 1 --latency-frames 2 --threads 2 \
    --bank "$bank/bank2.safetensors" --json > "$out/bench.json" 2> "$out/bench.err"
rc=$?
cat "$out/bench.json"
if [ $rc != 0 ]; then echo "FAIL: exit $rc"; cat "$out/bench.err"; exit 1; fi
"$py" - "$out/bench.json" <<'PYEOF'
import json, math, sys
j = json.load(open(sys.argv[1]))
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok &= bool(cond)
for k in ("bare_fps", "pipeline_fps", "overhead_pct", "swap_ms", "swap_bank_load_ms"):
    check(k in j and math.isfinite(j[k]), k + " present and finite")
check(j["frames"] == 2 and j["rounds"] == 1 and j["bank_domains"] == 2 and j["threads"] == 2, "frames/bank/threads echoed")
check(j["bare_fps"] > 0 and j["pipeline_fps"] > 0, "rates positive")
check(abs(j["overhead_pct"] - 100 * (j["bare_fps"] / j["pipeline_fps"] - 1)) < 1e-6, "overhead = bare/pipeline - 1")
lat = j["latency_ms"]
check(lat["n"] == 2 and 0 < lat["p50"] <= lat["p99"], "latency p50 <= p99, 2 frames")
check(j["swap_ms"] > 0 and j["swap_bank_load_ms"] > 0, "swap measured")
check(j["ingest_dropped"] == 0 and j["infer_dropped"] == 0, "nothing dropped")
sys.exit(0 if ok else 1)
PYEOF
