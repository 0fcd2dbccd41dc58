#!/usr/bin/env bash
# run_emu.sh — check the CUDA kernels without a GPU: compile kernels/cuda/*.cu as C++ against
# the CPU emulation in include/cuda_emu.h (launches rewritten by emu_transform.py), link them
# with the CPU reference ops and run a test on them. Catches indexing, layout, reduction and
# API-convention bugs; not timing, occupancy or real cuBLAS/cuDNN behaviour (those are
# emulated by reference loops / OpenBLAS).
#   run_emu.sh SRC_DIR BUILD_DIR OUT_DIR [group]
#       tests/gpu/test_kcu_ops.c (every kcu_ op vs its kn_ op; group as test_kcu_ops: core, ...)
#   run_emu.sh SRC_DIR BUILD_DIR OUT_DIR --test FILE.c [ARGS...]
#       any GPU test linked with libmoda (e.g. tests/gpu/test_tinyvit_cuda.c), run with ARGS.
# BUILD_DIR is a normal CUDA build (libmoda.a, libmoda_kernels.a). Kernel objects are kept in
# OUT_DIR and recompiled only when their .cu (or the emulation) is newer.
set -euo pipefail
src=$1
build=$2
out=$3
shift 3
emu=$src/tests/gpu/emu
mkdir -p "$out/cpu"
flags=(-std=c++20 -O1 -w -D_GNU_SOURCE -I"$emu/include" -I/usr/include/x86_64-linux-gnu
       -I"$src/kernels" -I"$src/kernels/cuda" -I"$src/common")
newer() { # newer TARGET DEP... : true when TARGET is missing or older than a DEP
    local t=$1; shift
    [ -e "$t" ] || return 0
    local d
    for d in "$@"; do [ "$d" -nt "$t" ] && return 0; done
    return 1
}
objs=()
for cu in "$src"/kernels/cuda/*.cu; do
    name=$(basename "$cu" .cu)
    if newer "$out/$name.o" "$cu" "$src"/kernels/cuda/*.cuh "$emu"/include/* "$emu/emu_transform.py"; then
        python3 "$emu/emu_transform.py" "$cu" "$out/$name.cpp" >/dev/null
        g++ "${flags[@]}" -c "$out/$name.cpp" -o "$out/$name.o"
    fi
    objs+=("$out/$name.o")
done
if newer "$out/emu_globals.o" "$emu/emu_globals.cpp" "$emu"/include/*; then
    g++ -std=c++20 -O1 -I"$emu/include" -I/usr/include/x86_64-linux-gnu \
        -c "$emu/emu_globals.cpp" -o "$out/emu_globals.o"
fi
# the CPU reference ops: the C objects of the kernels library (not its CUDA objects or stub)
(cd "$out/cpu" && rm -f ./*.o && ar x "$build/libmoda_kernels.a" && rm -f ./*.cu.o cuda_stub.c.o)
cflags=(-std=c11 -O1 -D_GNU_SOURCE -DMODA_HAVE_CUDA=1 -I"$src/kernels" -I"$src/common"
        -I"$build" -I"$build/proto")
if [ "${1:-}" = "--test" ]; then
    test_c=$2
    shift 2
    name=$(basename "$test_c" .c)
    gcc "${cflags[@]}" -c "$test_c" -o "$out/$name.o"
    # libmoda.a's sam_cuda.c etc. were compiled with MODA_HAVE_CUDA and call kcu_ ops, which
    # resolve to the emulated kernels here.
    g++ -o "$out/${name}_emu" "$out/$name.o" "$build/libmoda.a" "${objs[@]}" \
        "$out/emu_globals.o" "$out"/cpu/*.o \
        $(pkg-config --libs libzmq libprotobuf-c lmdb libpng libjpeg) -lopenblas -fopenmp -lm -lpthread
    exec "$out/${name}_emu" "$@"
fi
group=${1:-all}
gcc "${cflags[@]}" -c "$src/tests/gpu/test_kcu_ops.c" -o "$out/test_kcu_ops.o"
g++ -o "$out/test_kcu_ops_emu" "$out/test_kcu_ops.o" "${objs[@]}" "$out/emu_globals.o" \
    "$out"/cpu/*.o -lopenblas -fopenmp -lm -lpthread
exec "$out/test_kcu_ops_emu" "$group"
