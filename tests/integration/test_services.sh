#!/usr/bin/env bash
# test_services.sh — start each of the five service binaries, reach each with `moda health`
# (text and --json), check `moda health` failure modes, then stop them with SIGTERM and require
# exit status 0 from every one. Every wait is bounded (timeout), so the test cannot hang.
#
#   test_services.sh BIN_DIR OUT_DIR
set -u
BIN=$1
OUT=$2
mkdir -p "$OUT"
fail=0
check() { if ! eval "$1"; then echo "FAIL: $2" >&2; fail=1; fi; }
declare -A PIDS
SVCS="ingest infer label train registry"
cleanup() { for s in $SVCS; do [ -n "${PIDS[$s]:-}" ] && kill -KILL "${PIDS[$s]}" 2>/dev/null; done; }
trap cleanup EXIT

# Service-specific arguments so nothing touches shared default paths.
declare -A EXTRA
EXTRA[registry]="--data $OUT/registry-data --pub ipc:///tmp/moda-it-$$-regpub.sock --no-sync"
EXTRA[ingest]="--camera-id it1 --source synthetic:32x24 --fps 1 --connect ipc:///tmp/moda-it-$$-frames.sock"
EXTRA[infer]="--frames ipc:///tmp/moda-it-$$-frames.sock --results ipc:///tmp/moda-it-$$-results.sock --segment ipc:///tmp/moda-it-$$-seg.sock"
EXTRA[label]="--data $OUT/label-data --hard-case-bind ipc:///tmp/moda-it-$$-hc.sock"
for s in $SVCS; do
  ep="ipc:///tmp/moda-it-$$-$s.sock"
  # Started directly (not under timeout(1), which would signal it twice); the trap and the
  # bounded wait below keep the test from hanging.
  # shellcheck disable=SC2086
  "$BIN/moda-$s" --bind "$ep" ${EXTRA[$s]:-} 2>"$OUT/$s.log" &
  PIDS[$s]=$!
done
for s in $SVCS; do
  ep="ipc:///tmp/moda-it-$$-$s.sock"
  out=$(timeout 10 "$BIN/moda" health "$ep" --timeout-ms 5000)
  rc=$?
  check "[ $rc -eq 0 ]" "moda health $s exited $rc"
  check "grep -q '^service  *$s\$' <<<\"\$out\"" "moda health $s: no 'service $s' line in: $out"
  check "grep -q '^state  *serving\$' <<<\"\$out\"" "moda health $s: not serving"
  json=$(timeout 10 "$BIN/moda" health "$ep" --json --timeout-ms 5000)
  check "[ $? -eq 0 ]" "moda health --json $s failed"
  check "grep -q '\"service\":\"$s\"' <<<\"\$json\"" "json for $s lacks service: $json"
  check "grep -q '\"health_requests\":2' <<<\"\$json\"" "json for $s: health_requests is not 2: $json"
done

# Failure modes: nobody there -> 1 within the timeout; bad usage -> 2; --help -> 0.
start=$(date +%s%N)
timeout 10 "$BIN/moda" health "ipc:///tmp/moda-it-$$-nobody.sock" --timeout-ms 300 2>"$OUT/nobody.err"
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "[ $rc -eq 1 ]" "moda health on a dead endpoint exited $rc (want 1)"
check "[ $ms -lt 3000 ]" "moda health on a dead endpoint took ${ms} ms"
check "grep -q 'no reply within 300 ms' '$OUT/nobody.err'" "dead endpoint message: $(cat "$OUT/nobody.err")"
timeout 10 "$BIN/moda" health 2>/dev/null; rc=$?
check "[ $rc -eq 2 ]" "moda health without endpoint exited $rc (want 2)"
timeout 10 "$BIN/moda" health "udp://x:1" 2>/dev/null; rc=$?
check "[ $rc -eq 2 ]" "moda health with a bad endpoint exited $rc (want 2)"
timeout 10 "$BIN/moda" health --help >/dev/null; rc=$?
check "[ $rc -eq 0 ]" "moda health --help exited $rc"

for s in $SVCS; do kill -TERM "${PIDS[$s]}"; done
for s in $SVCS; do
  for _ in $(seq 100); do kill -0 "${PIDS[$s]}" 2>/dev/null || break; sleep 0.05; done
  kill -0 "${PIDS[$s]}" 2>/dev/null && kill -KILL "${PIDS[$s]}"
  wait "${PIDS[$s]}"; rc=$?
  check "[ $rc -eq 0 ]" "moda-$s exited $rc after SIGTERM (want 0; 137 = did not stop in 5 s)"
  check "grep -q 'event=stop code=0' '$OUT/$s.log'" "moda-$s log lacks event=stop"
  check "[ ! -e /tmp/moda-it-$$-$s.sock ]" "moda-$s left its ipc socket file behind"
  PIDS[$s]=
done
[ $fail -eq 0 ] && echo "test_services: 5 services reached with moda health and stopped cleanly"
exit $fail
