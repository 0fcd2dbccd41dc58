#!/usr/bin/env bash
# run_emu.sh — check the CUDA kernels without a GPU: compile kernels/cuda/*.cu as C++ against
# the CPU emulation in include/cuda_emu.h (launches rewritten by emu_transform.py), link them
# with the CPU reference ops and run tests/gpu/test_kcu_ops.c (every kcu_ op vs its kn_ op).
# Catches indexing, layout, reduction and API-convention bugs; not timing, occupancy or
# real cuBLAS/cuDNN behaviour (those are emulated by reference loops / OpenBLAS).
#   usage: run_emu.sh SRC_DIR BUILD_DIR OUT_DIR [group]     (group as test_kcu_ops: core, ...)
set -euo pipefail
src=$1
build=$2
out=$3
group=${4:-all}
emu=$src/tests/gpu/emu
mkdir -p "$out/cpu"
flags=(-std=c++20 -O1 -w -D_GNU_SOURCE -I"$emu/include" -I/usr/include/x86_64-linux-gnu
       -I"$src/kernels" -I"$src/kernels/cuda" -I"$src/common")
objs=()
for cu in "$src"/kernels/cuda/*.cu; do
    name=$(basename "$cu" .cu)
    python3 "$emu/emu_transform.py" "$cu" "$out/$name.cpp" >/dev/null
    g++ "${flags[@]}" -c "$out/$name.cpp" -o "$out/$name.o"
    objs+=("$out/$name.o")
done
g++ -std=c++20 -O1 -I"$emu/include" -I/usr/include/x86_64-linux-gnu -c "$emu/emu_globals.cpp" \
    -o "$out/emu_globals.o"
# the CPU reference ops: the C objects of the kernels library (not its CUDA objects or stub)
(cd "$out/cpu" && rm -f ./*.o && ar x "$build/libmoda_kernels.a" && rm -f ./*.cu.o cuda_stub.c.o)
gcc -std=c11 -O1 -D_GNU_SOURCE -I"$src/kernels" -I"$src/common" -c "$src/tests/gpu/test_kcu_ops.c" \
    -o "$out/test_kcu_ops.o"
g++ -o "$out/test_kcu_ops_emu" "$out/test_kcu_ops.o" "${objs[@]}" "$out/emu_globals.o" \
    "$out"/cpu/*.o -lopenblas -fopenmp -lm -lpthread
exec "$out/test_kcu_ops_emu" "$group"
