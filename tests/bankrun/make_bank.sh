#!/bin/sh
# make_bank.sh MODA DATA_CL OUT_DIR — the 2-domain test bank (magtile, nuclei) with tiny
# training settings (the bank tests check domain choice, not segmentation quality), and the
# same bank without its selector. Used as the ctest fixture "bankrun_bank".
set -e
moda=$1 cl=$2 out=$3
mkdir -p "$out"
rm -f "$out/bank1.safetensors" "$out/bank2.safetensors" "$out/bank2_nosel.safetensors"
"$moda" train-domain --out "$out/bank1.safetensors" --domain magtile --data "$cl/magtile" \
    --max-train 2 --epochs 1 --replay 3 --no-eval --quiet --seed 1
"$moda" train-domain --bank "$out/bank1.safetensors" --out "$out/bank2.safetensors" \
    --domain nuclei --data "$cl/nuclei" --max-train 2 --epochs 1 --replay 3 --no-eval --quiet --seed 1
"$(dirname "$moda")/bank_tool" strip-selector "$out/bank2.safetensors" "$out/bank2_nosel.safetensors"
"$(dirname "$moda")/bank_tool" info "$out/bank2.safetensors"
