#!/usr/bin/env bash
# Stop the daemons that start.sh started, by their pid files (never by name).
set -u
BASE=${GATEDRNN_SLURM_DIR:-/tmp/gatedrnn-slurm}
stop() {
  local pidfile=$1
  [ -s "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
stop "$BASE/run/slurmd.pid"
stop "$BASE/run/slurmctld.pid"
stop "$BASE/run/slurmdbd.pid"
stop /run/mysqld/gatedrnn-mariadb.pid
stop /run/munge/munged.pid
echo "[slurm] stopped"
