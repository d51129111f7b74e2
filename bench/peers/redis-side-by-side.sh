#!/usr/bin/env bash
# Tidings' durable sends next to Redis Streams with `appendfsync always` (fsync before every
# reply), in one run, on this machine, as ratios. Redis runs on its own loopback port with its
# own temporary directory, and is shut down at the end.
#
#   bash bench/peers/redis-side-by-side.sh            # from the project root, after a release build
#
# Same payload size (1 KiB), same shapes: one producer one message at a time, 64 concurrent
# producers, one producer sending batches (pipelines) of 100, four of them.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${PORT:-6399}
N=${N:-100000}
TIDINGS=target/release/tidings-bench
[ -x "$TIDINGS" ] || cargo build --release --bin tidings-bench

work=$(mktemp -d)
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$work" --save "" \
  --appendonly yes --appendfsync always --daemonize yes --logfile "$work/redis.log"
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

payload=$(head -c 1024 /dev/urandom | base64 -w0 | head -c 1024)

# Messages per second reported by redis-benchmark for XADD with `clients` connections and
# `pipeline` commands in flight per connection.
redis_rate() {
  local clients=$1 pipeline=$2 n=$3
  redis-cli -p "$PORT" del bench >/dev/null
  redis-benchmark -p "$PORT" -q -n "$n" -c "$clients" -P "$pipeline" \
    XADD bench '*' data "$payload" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1
}

# Messages per second of one `tidings-bench engine` scenario.
tidings_rate() {
  "$TIDINGS" engine --dir "$work/tidings" --messages "$N" --scenario "$1" |
    grep '^  send' | grep -o '[0-9]* msg/s' | head -1 | cut -d' ' -f1
}

printf '| shape | Redis appendfsync always | Tidings durable | ratio |\n|---|---|---|---|\n'
row() {
  local name=$1 scenario=$2 clients=$3 pipeline=$4 n=$5
  local r t
  r=$(redis_rate "$clients" "$pipeline" "$n")
  t=$(tidings_rate "$scenario")
  printf '| %s | %.0f msg/s | %s msg/s | %.1fx |\n' "$name" "$r" "$t" "$(echo "$t / $r" | bc -l)"
}
row "1 producer, 1 message at a time" send-one 1 1 $((N / 40))
row "64 producers, 1 message each" send-concurrent 64 1 $((N / 2))
row "1 producer, batches of 100" send-batch 1 100 "$N"
row "4 producers, batches of 100" send-batch4 4 100 "$N"
