#!/usr/bin/env bash
# Start or stop a Docker engine on a machine where none runs (CI, fresh VMs without systemd).
#
#   bash deploy/dockerd.sh start   # install docker.io if needed, start dockerd, wait until it answers
#   bash deploy/dockerd.sh stop    # stop the engine this script started (nothing else), wait for it
#   bash deploy/dockerd.sh status
#
# If an engine already answers, `start` uses it and `stop` leaves it alone: only a dockerd this script
# started (its pid is in $STATE/dockerd.pid) is ever stopped. Needs root to install or start one.
set -euo pipefail

STATE="${HIRING_DOCKERD_STATE:-/var/run/hiring-dockerd}"
LOG="${HIRING_DOCKERD_LOG:-/var/log/hiring-dockerd.log}"
PIDFILE="$STATE/dockerd.pid"
WAIT="${HIRING_DOCKERD_WAIT:-60}"

say() { printf 'dockerd.sh: %s\n' "$*" >&2; }

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ours() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  if answers; then
    say "a Docker engine already answers ($(docker version --format '{{.Server.Version}}')); using it"
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    say "installing docker.io (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! command -v docker >/dev/null 2>&1; then
    say "no docker CLI after installing docker.io"
    return 1
  fi
  mkdir -p "$STATE"
  # setsid: its own session, so the engine survives the caller's shell job control but is still
  # ours to stop by pid. containerd is started by dockerd itself (as its child) and stops with it.
  setsid dockerd --pidfile "$PIDFILE" >>"$LOG" 2>&1 </dev/null &
  local t=$SECONDS
  until answers; do
    if ((SECONDS - t > WAIT)); then
      say "dockerd did not answer within ${WAIT}s; last lines of $LOG:"
      tail -n 30 "$LOG" >&2
      stop || true
      return 1
    fi
    sleep 0.5
  done
  say "dockerd $(docker version --format '{{.Server.Version}}') up in $((SECONDS - t))s (pid $(cat "$PIDFILE"), log $LOG)"
}

stop() {
  if ! ours; then
    say "no dockerd started by this script is running"
    rm -f "$PIDFILE"
    return 0
  fi
  local pid t=$SECONDS
  pid="$(cat "$PIDFILE")"
  kill -TERM "$pid"
  # dockerd stops its containers (10 s each at most, in parallel) and its containerd, then exits
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS - t > 60)); then
      say "dockerd (pid $pid) still running after 60s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDFILE"
  say "dockerd (pid $pid) stopped in $((SECONDS - t))s"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if answers; then docker version --format 'engine {{.Server.Version}}'; else echo "no engine"; fi
    if ours; then echo "started by this script: pid $(cat "$PIDFILE")"; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
