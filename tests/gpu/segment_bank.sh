#!/bin/sh
# segment_bank.sh MODA MODEL DATA_CL OUT_DIR — `moda segment --bank` end to end on the GPU
# (GPU encoder → bankrun on the GPU: decoder + adapter head) against the same command on the
# CPU, for tests/gpu/run.sh. A one-domain bank is trained on the CPU with tiny settings (the
# check is CPU/GPU agreement, not quality); then one magtile image, promptless and with a
# box: the foreground pixel counts of the two masks must agree within 1 % of the image (the
# PNGs are not compared byte for byte: the GPU encoder runs in TF32).
# Exit 0 pass, 1 fail.
set -e
moda=$1 model=$2 cl=$3 out=$4
mkdir -p "$out"
img=$cl/magtile/images/Blowhole_exp1_num_290998.jpg
"$moda" train-domain --model "$model" --out "$out/bank1.safetensors" --domain magtile \
    --data "$cl/magtile" --max-train 2 --epochs 1 --replay 3 --no-eval --quiet --seed 1 --device cpu
fg() { # fg DEVICE NAME PROMPT_ARGS...: the mask's foreground pixel count
    dev=$1 name=$2
    shift 2
    "$moda" segment --model "$model" --image "$img" --bank "$out/bank1.safetensors" "$@" \
        --out "$out/$name-$dev.png" --device "$dev" | tee -a "$out/segment.txt" |
        sed -n 's/^mask: .*(\([0-9]*\)x\([0-9]*\), \([0-9]*\) foreground px.*/\1 \2 \3/p'
}
fail=0
for p in auto box; do
    if [ $p = auto ]; then set -- --prompt auto; else set -- --box 30,30,250,300; fi
    c=$(fg cpu $p "$@")
    g=$(fg cuda $p "$@")
    echo "$p: cpu (w h fg) $c, cuda $g"
    echo "$c $g" | awk '{d = $3 - $6; if (d < 0) d = -d; exit !(NF == 6 && d <= 0.01 * $1 * $2)}' ||
        { echo "FAIL $p: foreground counts differ by more than 1 % of the image"; fail=1; }
done
[ $fail = 0 ] && echo "PASS"
exit $fail
