#!/usr/bin/env bash
# Tidings on PostgreSQL beside the plain-SQL floor, pgmq, the embedded engine and Redis, in one
# run, rounds alternating (tidings-bench postgres). pgmq is installed from its SQL-only script,
# which the pgmq package on PyPI carries (pgmq==1.1.4 bundles the extension's SQL 1.13.0): it
# creates the schema `pgmq` in the database for the run and drops it after.
#
#   bash bench/peers/pgmq-side-by-side.sh      # from the project root
#
# POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL, N (messages per
# throughput row, default 20000), ROUNDS (default 3), SECONDS_ (latency row length, default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."

URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379/15}
N=${N:-20000}
ROUNDS=${ROUNDS:-3}
SECONDS_=${SECONDS_:-10}
cargo build --release --bin tidings-bench >/dev/null 2>&1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps pgmq==1.1.4 -d "$work" >/dev/null
python3 -m zipfile -e "$work"/pgmq-1.1.4-py3-none-any.whl "$work/pgmq"
sql="$work/pgmq/pgmq/sql/pgmq.sql"

target/release/tidings-bench postgres --url "$URL" --redis "$REDIS" --messages "$N" \
  --rounds "$ROUNDS" --latency-for "${SECONDS_}s" --dir "$work/embedded" --pgmq-sql "$sql"
