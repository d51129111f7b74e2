#!/usr/bin/env bash
# Tidings serve vs Amebo 0.9.6 (from PyPI), one run, the same HTTP client for both
# (`tidings-bench hub`), then ratios. Amebo runs on SQLite in a scratch directory,
# as its one-process default. Takes about three minutes.
#
#   bash bench/peers/amebo-side-by-side.sh
#
# With POSTGRES=1 both run on PostgreSQL instead (POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/postgres): Amebo with AMEBO_DSN on a database of its own
# (amebo_bench, created and dropped), Tidings with --broker on a schema of its own
# (tidings_hub_bench, dropped after); and Tidings' publish → webhook latency at 1,000 events/s.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q --bin tidings --bin tidings-bench
TIDINGS=$PWD/target/release/tidings-bench
WORK=${TMPDIR:-/tmp}/tidings-amebo-bench
VENV=$WORK/venv
mkdir -p "$WORK"
[ -x "$VENV/bin/uvicorn" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q amebo==0.9.6; }

rm -rf "$WORK/amebo" && mkdir -p "$WORK/amebo"
KEY=amebo_admin_benchkey
SERVE=()
if [ -n "${POSTGRES:-}" ]; then
  PG=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
  export PGOPTIONS="-c client_min_messages=warning"
  psql "$PG" -qc 'DROP DATABASE IF EXISTS amebo_bench' -c 'CREATE DATABASE amebo_bench'
  psql "$PG" -qc 'DROP SCHEMA IF EXISTS tidings_hub_bench CASCADE'
  export AMEBO_DSN="${PG%/*}/amebo_bench"
  sep='?'; [[ "$PG" == *\?* ]] && sep='&'
  SERVE=(--serve-arg=--broker "--serve-arg=$PG${sep}schema=tidings_hub_bench")
fi
(cd "$WORK/amebo" && AMEBO_SECRET=jwt-signing-secret-0123456789 AMEBO_USERNAME=admin \
  AMEBO_PASSWORD='Adm1nPassw0rd!' AMEBO_ADMIN_KEY=$KEY \
  exec "$VENV/bin/uvicorn" amebo.router:router --host 127.0.0.1 --port 3320 --log-level warning) \
  > "$WORK/amebo.log" 2>&1 &
AMEBO_PID=$!
cleanup() {
  kill $AMEBO_PID 2>/dev/null || true
  if [ -n "${POSTGRES:-}" ]; then
    wait $AMEBO_PID 2>/dev/null || true
    psql "$PG" -qc 'DROP DATABASE IF EXISTS amebo_bench' -c 'DROP SCHEMA IF EXISTS tidings_hub_bench CASCADE' || true
  fi
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:3320/health >/dev/null && break; sleep 0.1; done

run() { "$TIDINGS" hub "$@" 2>&1 | grep -E '^(publish|deliver)' ; }
AMEBO=(--url http://127.0.0.1:3320 --admin-key $KEY)

echo "== publish, 16 connections, 10 s"
T_PUB=$(run "${SERVE[@]}" --scenario publish --connections 16); echo "tidings: $T_PUB"
A_PUB=$(run "${AMEBO[@]}" --scenario publish --connections 16); echo "amebo:   $A_PUB"
echo "== draining a backlog to a local receiver (tidings 50000 events, amebo 300: it delivers ~14/s)"
T_DEL=$(run "${SERVE[@]}" --scenario deliver --events 50000 --connections 16); echo "tidings: $T_DEL"
A_DEL=$(run "${AMEBO[@]}" --scenario deliver --events 300 --connections 16); echo "amebo:   $A_DEL"
echo "== publish → webhook latency at 5 events/s for 20 s (below Amebo's delivery ceiling)"
T_LAT=$(run "${SERVE[@]}" --scenario latency --rate 5 --latency-for 20s); echo "tidings: $T_LAT"
A_LAT=$(run "${AMEBO[@]}" --scenario latency --rate 5 --latency-for 20s); echo "amebo:   $A_LAT"

rate() { grep -oE '[0-9]+ (events|webhooks)/s' <<<"$1" | grep -oE '^[0-9]+'; }
p99() { grep -oE 'p99 [0-9.]+' <<<"$1" | grep -oE '[0-9.]+$'; }
echo "== ratios (tidings / amebo)"
awk -v t="$(rate "$T_PUB")" -v a="$(rate "$A_PUB")" 'BEGIN { printf "publish rate:      %.0fx\n", t / a }'
awk -v t="$(rate "$T_DEL")" -v a="$(rate "$A_DEL")" 'BEGIN { printf "delivery rate:     %.0fx\n", t / a }'
awk -v t="$(p99 "$T_LAT")" -v a="$(p99 "$A_LAT")" 'BEGIN { printf "latency p99:       %.0fx lower\n", a / t }'
if [ -n "${POSTGRES:-}" ]; then
  echo "== Tidings alone: publish → webhook latency at 1,000 events/s for 20 s"
  "$TIDINGS" hub "${SERVE[@]}" --scenario latency --rate 1000 --latency-for 20s 2>&1 | grep -E '^publish'
fi
