#!/usr/bin/env bash
# compose/podman-setup.sh — make rootful podman usable by docker-compose on this machine.
#
#   compose/podman-setup.sh          write the settings, start the API socket if it is not up
#   compose/podman-setup.sh --stop   stop the API service this script started
#
# Writes /etc/containers/containers.conf.d/50-moda.conf:
#   runtime = "runc"              (crun does not start containers here)
#   default_ulimits = nofile/nproc 1024:1024   (the host's limits are above what the
#                                 container runtime may set here)
#   network_backend = "netavark"  (with aardvark-dns: service names resolve between containers,
#                                 which the endpoints in docker-compose.yml rely on)
# then starts `podman system service --time=0 unix:///run/podman/podman.sock` in the
# background (pid in /run/podman/moda-service.pid, log /var/log/moda-podman-service.log)
# unless something already answers there (e.g. systemd's podman.socket).
# Use it with: export DOCKER_HOST=unix:///run/podman/podman.sock; docker-compose ...
# Needs root. Idempotent.
set -euo pipefail
SOCK=/run/podman/podman.sock
PIDFILE=/run/podman/moda-service.pid
LOG=/var/log/moda-podman-service.log
CONF=/etc/containers/containers.conf.d/50-moda.conf

say() { printf '[podman-setup] %s\n' "$*"; }
die() { printf '[podman-setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (rootful podman: named volumes and ports as docker does)"
command -v podman >/dev/null || die "podman not found (./moda.sh compose installs it)"

if [ "${1:-}" = --stop ]; then
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -TERM "$(cat "$PIDFILE")" && rm -f "$PIDFILE" && say "stopped the podman API service"
  else
    say "no podman API service started by this script"
  fi
  exit 0
fi

mkdir -p "$(dirname "$CONF")"
want='# written by moda compose/podman-setup.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want" ]; then
  printf '%s\n' "$want" >"$CONF"
  say "wrote $CONF"
fi
podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.NetworkBackend}}' 2>/dev/null \
  | grep -q '^runc netavark$' || die "podman does not pick up $CONF (podman info)"

answers() { curl -fsS --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }
if answers; then
  say "podman API already answers on $SOCK"
else
  mkdir -p "$(dirname "$SOCK")"
  rm -f "$SOCK"
  nohup podman system service --time=0 "unix://$SOCK" >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 50); do answers && break; sleep 0.2; done
  answers || die "podman system service did not answer on $SOCK (log: $LOG)"
  say "podman API on $SOCK (pid $(cat "$PIDFILE"))"
fi
say "now: export DOCKER_HOST=unix://$SOCK"
