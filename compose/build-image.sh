#!/usr/bin/env bash
# compose/build-image.sh — build the container images docker-compose.yml runs, without any
# container registry: only the Debian apt mirror and podman.
#
#   compose/build-image.sh                 build moda-base (once) and moda (always)
#   compose/build-image.sh --rebuild-base  also rebuild moda-base from scratch
#
# 1. localhost/moda-base:bookworm — a Debian 12 root file system made with
#    `debootstrap --variant=minbase` plus only the shared libraries the moda binaries load at
#    run time (ZeroMQ, protobuf-c, LMDB, OpenBLAS, libpng, libjpeg, FFmpeg), apt caches
#    removed, turned into an image with `podman import`. Built only when missing.
# 2. localhost/moda:latest — compose/Containerfile on top of it: the built binaries
#    (moda + the five services) and the default model (.deps/models/mobile_sam.safetensors,
#    made by ./moda.sh setup). The binaries come from $MODA_BUILD_DIR/bin when it is set,
#    else from a CPU-only build made here in build-image/ (-DWITH_CUDA=OFF, Release, only
#    those six targets): Debian main has no CUDA runtime, so a binary linked against
#    libcudart/cuBLAS/cuDNN (build/ on a machine with nvcc) cannot run in this image.
#
# Environment: MODA_BUILD_DIR (binaries), MODA_MODEL (model file to ship),
# MODA_DEBIAN_MIRROR (default http://deb.debian.org/debian), MODA_IMAGE (default moda:latest),
# MODA_BASE_IMAGE (default moda-base:bookworm), MODA_ROOTFS_DIR (debootstrap work folder,
# default /var/tmp/moda-base-rootfs). Needs root (debootstrap, rootful podman; see
# compose/podman-setup.sh). Idempotent; exits non-zero with a message naming what failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${MODA_BUILD_DIR:-}
MODEL=${MODA_MODEL:-$ROOT/.deps/models/mobile_sam.safetensors}
MIRROR=${MODA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE=${MODA_IMAGE:-moda:latest}
BASE=${MODA_BASE_IMAGE:-moda-base:bookworm}
ROOTFS=${MODA_ROOTFS_DIR:-/var/tmp/moda-base-rootfs}
BINS=(moda moda-registry moda-label moda-train moda-infer moda-ingest)
TARGETS=(moda-cli moda-registry moda-label moda-train moda-infer moda-ingest)

# Run-time libraries only (no -dev packages, no compiler). Debootstrap resolves their
# dependencies. Keep in step with the link line of the binaries (`ldd build/bin/moda-infer`).
RUNTIME_PACKAGES=(ca-certificates libzmq5 libprotobuf-c1 liblmdb0 libopenblas0-pthread
  libpng16-16 libjpeg62-turbo libavformat59 libavcodec59 libavutil57 libswscale6)

say() { printf '[build-image] %s\n' "$*"; }
die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }

rebuild_base=0
for a in "$@"; do
  case "$a" in
    --rebuild-base) rebuild_base=1 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$a' (try --help)" ;;
  esac
done

command -v podman >/dev/null || die "podman not found (./moda.sh compose installs it)"
if [ -z "$BUILD" ]; then
  BUILD=$ROOT/build-image
  say "CPU-only build of ${TARGETS[*]} in $BUILD (log: $BUILD.log)"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWITH_CUDA=OFF >"$BUILD.log" 2>&1 \
    && cmake --build "$BUILD" -j"${MODA_JOBS:-$(nproc)}" --target "${TARGETS[@]}" >>"$BUILD.log" 2>&1 \
    || { tail -30 "$BUILD.log" >&2; die "CPU-only build failed (log: $BUILD.log)"; }
fi
for b in "${BINS[@]}"; do
  [ -x "$BUILD/bin/$b" ] || die "$BUILD/bin/$b missing: build first (./moda.sh build)"
  if ldd "$BUILD/bin/$b" | grep -qE 'libcudart|libcublas|libcudnn'; then
    die "$BUILD/bin/$b links the CUDA runtime, which the Debian image does not have: build with
    -DWITH_CUDA=OFF (unset MODA_BUILD_DIR and this script does), or see docs/compose.md (GPU)"
  fi
done
[ -f "$MODEL" ] || die "model $MODEL missing: run ./moda.sh setup (or set MODA_MODEL)"

build_base() {
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
  local include
  include=$(IFS=,; echo "${RUNTIME_PACKAGES[*]}")
  say "debootstrap bookworm (minbase + ${#RUNTIME_PACKAGES[@]} runtime packages) into $ROOTFS"
  rm -rf "$ROOTFS"
  mkdir -p "$ROOTFS"
  debootstrap --variant=minbase --include="$include" bookworm "$ROOTFS" "$MIRROR" \
    >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; die "debootstrap failed (log: $ROOTFS.log)"; }
  # Nothing of the bootstrap that an image does not need: package caches and lists, docs.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
  say "podman import -> $BASE"
  tar --numeric-owner -C "$ROOTFS" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null || die "podman import failed"
  rm -rf "$ROOTFS"
}

if [ "$rebuild_base" = 1 ] || ! podman image exists "$BASE"; then
  build_base
else
  say "base image $BASE present (--rebuild-base to rebuild)"
fi

# Build context: only what the image needs (the repository and build tree are large).
CTX=$(mktemp -d "${TMPDIR:-/tmp}/moda-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/bin" "$CTX/models"
for b in "${BINS[@]}"; do cp "$BUILD/bin/$b" "$CTX/bin/"; done
cp "$MODEL" "$CTX/models/mobile_sam.safetensors"
say "podman build -> $IMAGE (binaries from $BUILD/bin)"
podman build --quiet --build-arg "BASE=localhost/$BASE" -f "$HERE/Containerfile" -t "$IMAGE" "$CTX" >/dev/null \
  || die "podman build failed"
missing=$(podman run --rm "$IMAGE" sh -c 'ldd /usr/local/bin/moda* | grep "not found" | sort -u') \
  || die "$IMAGE does not start a shell"
[ -z "$missing" ] || die "libraries missing in $IMAGE (add their packages to RUNTIME_PACKAGES):
$missing"
podman run --rm "$IMAGE" moda --version >/dev/null || die "$IMAGE does not run moda --version"
say "built $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
