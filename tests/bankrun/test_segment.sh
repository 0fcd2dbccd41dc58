#!/bin/sh
# test_segment.sh MODA DATA_CL BANK_DIR — `moda segment --bank` with domain selection on the
# 2-domain fixture bank (make_bank.sh): a magtile and a nuclei TEST image (not in the
# selector's replay) each pick their own domain and print the selector probability;
# --domain forces one ("forced"); an unknown --domain lists the bank's domains; the bank
# without selector is a clear error asking for --domain, and works with --domain.
moda=$1 cl=$2 dir=$3
fail=0
check() { # check NAME EXPECTED_RC PATTERN OUTPUT_FILE
    if [ "$(cat "$dir/rc")" != "$2" ] || ! grep -q -- "$3" "$4"; then
        echo "FAIL $1: rc $(cat "$dir/rc") (want $2), no '$3' in:"; cat "$4"; fail=1
    else
        echo "ok $1: $(grep -- "$3" "$4" | head -1)"
    fi
}
run() { # run OUTFILE args...
    o=$1; shift
    "$moda" segment --threads 2 "$@" > "$o" 2>&1; echo $? > "$dir/rc"
}
mag=$(awk '$2 == "test" {print $1; exit}' "$cl/magtile/split.txt")
nuc=$(awk '$2 == "test" {print $1; exit}' "$cl/nuclei/split.txt")
magimg=$(ls "$cl/magtile/images/$mag".* | head -1)
nucimg=$(ls "$cl/nuclei/images/$nuc".* | head -1)
b="$dir/bank2.safetensors"
run "$dir/seg_mag.txt" --bank "$b" --image "$magimg" --prompt auto --out "$dir/mag.png"
check "magtile image selects magtile" 0 "^domain magtile (selector probability 0\.[5-9]" "$dir/seg_mag.txt"
run "$dir/seg_nuc.txt" --bank "$b" --image "$nucimg" --prompt auto --out "$dir/nuc.png"
check "nuclei image selects nuclei" 0 "^domain nuclei (selector probability 0\.[5-9]" "$dir/seg_nuc.txt"
run "$dir/seg_forced.txt" --bank "$b" --image "$nucimg" --prompt auto --domain magtile --out "$dir/forced.png"
check "--domain forces" 0 "^domain magtile (forced by --domain)" "$dir/seg_forced.txt"
run "$dir/seg_unknown.txt" --bank "$b" --image "$nucimg" --prompt auto --domain bsdata --out "$dir/x.png"
check "unknown --domain" 1 "no domain 'bsdata' (it has: magtile, nuclei)" "$dir/seg_unknown.txt"
run "$dir/seg_nosel.txt" --bank "$dir/bank2_nosel.safetensors" --image "$magimg" --prompt auto --out "$dir/x.png"
check "no selector" 1 "no selector.*pass --domain NAME" "$dir/seg_nosel.txt"
run "$dir/seg_nosel_forced.txt" --bank "$dir/bank2_nosel.safetensors" --image "$magimg" --prompt auto --domain nuclei --out "$dir/x.png"
check "no selector, forced" 0 "^domain nuclei (forced by --domain)" "$dir/seg_nosel_forced.txt"
[ -s "$dir/mag.png" ] && [ -s "$dir/nuc.png" ] || { echo "FAIL: masks not written"; fail=1; }
exit $fail
