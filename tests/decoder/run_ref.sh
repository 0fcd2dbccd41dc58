#!/bin/bash
# run_ref.sh — decoder golden test: real images -> PIL preprocessing -> onnxruntime encoder
# embedding -> onnxruntime decoder answers for point / two-point / box / point+box / mask
# prompts -> test_decoder_ref compares samdec_* with them.
#
#   run_ref.sh TEST_BIN REPO DATA WORK WEIGHTS PYTHON NODE
#
# Goldens are generated into WORK (build tree) at test time. Both sides are timed on one
# thread (wall time on the shared 2-core machine is only comparable like that). Exit 77
# (skip) when the weights file or node is missing; anything else failing is a failure.
# MODA_DEC_WEIGHTS overrides the weights path.
set -euo pipefail
bin=$1 repo=$2 data=$3 work=$4 weights=${MODA_DEC_WEIGHTS:-$5} py=$6 node=$7
if [ ! -f "$weights" ]; then echo "SKIP: no weights at $weights (run moda convert)"; exit 77; fi
if [ ! -x "$node" ] && ! command -v "$node" >/dev/null; then echo "SKIP: no node"; exit 77; fi
ref=$repo/tests/ref
cases="point twopoint box pointbox mask"
mkdir -p "$work"
rc=0
# one test image per domain: the first `test` id of each split
for dom in bsdata nuclei magtile; do
  id=$(awk '$2 == "test" { print $1; exit }' "$data/cl/$dom/split.txt")
  img=$(ls "$data/cl/$dom/images/$id".* | head -1)
  d=$work/$dom
  mkdir -p "$d"
  if [ ! -f "$d/emb.f32" ]; then
    "$py" "$ref/ref_preprocess.py" "$img" "$d/in.f32" --json "$d/meta.json"
    "$node" "$ref/ort_run.js" encoder "$d/in.f32" "$d/emb.f32" > /dev/null
    rm -f "$d/in.f32"
  fi
  "$py" "$repo/tests/decoder/make_prompts.py" "$data/cl/$dom/masks/$id.png" "$d/meta.json" "$d"
  for c in $cases; do   # `point` first: `mask` feeds its low-res answer back
    "$node" "$ref/ort_run.js" decoder "$d/emb.f32" "$d/$c.json" "$d/$c" --threads 1 --iters 4 > /dev/null
  done
  echo "== $dom ($id)"
  "$bin" "$weights" "$d/emb.f32" "$d" --threads 1 --iters 7 $cases || rc=1
done
exit $rc
