#!/usr/bin/env bash
# Tidings' Redis engine next to Python LeanMQ 0.2.0, on the same Redis, in one run, as ratios;
# Tidings' batched sends next to the Redis limit (`redis-benchmark -P 16` XADD of 1 KB); and the floor
# of the round-trip-bound rows (the least Redis work of the row, sent by redis-rs alone).
#
#   bash bench/peers/leanmq-side-by-side.sh      # from the project root
#
# Needs a virtualenv with leanmq==0.2.0 at .venv (.ci/run makes it). Uses the Redis at
# REDIS_PORT (default 6379), database 15, and removes the keys it wrote.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${REDIS_PORT:-6379}
DB=15
N=${N:-20000}
RATE=${RATE:-1000}
IDLE=${IDLE:-8}
SECONDS_=${SECONDS_:-10}
TIDINGS=target/release/tidings-bench
cargo build --release --bin tidings-bench >/dev/null 2>&1
PY=.venv/bin/python
$PY -c "import leanmq" 2>/dev/null || { python3 -m venv .venv && $PY -m pip install -q leanmq==0.2.0; }

work=$(mktemp -d)
cleanup() {
  rm -rf "$work"
  for pattern in 'leanmq-bench:*' 'tidings-bench:*' rb-bench; do
    redis-cli -p "$PORT" -n "$DB" --scan --pattern "$pattern" | xargs -r redis-cli -p "$PORT" -n "$DB" del >/dev/null
  done
}
trap cleanup EXIT

echo "== Tidings (tidings-bench redis)"
"$TIDINGS" redis --url "redis://127.0.0.1:$PORT/$DB" --messages "$N" \
  --scenario send-one --scenario send-concurrent --scenario send-batch --scenario send-batch4 \
  --scenario receive-ack10 --scenario receive-ack100 \
  --scenario receive-ack10-combined --scenario receive-ack100-combined | tee "$work/tidings"
# The same consumer and sender rows, and the target webhook row, with Tidings on a current-thread
# runtime (one thread, as LeanMQ's client is): on two cores shared with Redis, the multi-thread
# runtime's hand-offs between worker threads cost more than they bring to one consumer.
"$TIDINGS" redis --url "redis://127.0.0.1:$PORT/$DB" --messages "$N" --current-thread \
  --scenario send-one --scenario receive-ack10 --scenario receive-ack10-combined \
  --scenario receive-ack100-combined --scenario send-one-floor --scenario receive-ack10-floor | sed -E 's/^row ([^ ]+)/row \1-1thread/' | tee -a "$work/tidings"
"$TIDINGS" redis --url "redis://127.0.0.1:$PORT/$DB" --current-thread --scenario webhook --rate "$RATE" \
  --idle-routes "$IDLE" --latency-for "${SECONDS_}s" | sed 's/^row webhook-\(p[0-9]*\)/row target-webhook-\1-1thread/' | tee -a "$work/tidings"
# Webhook send -> handler, in three shapes: the target (1,000/s beside 8 idle routes), and the
# two LeanMQ's reference measured (500/s on one route; 5/s to the 3rd of 3 routes).
"$TIDINGS" redis --url "redis://127.0.0.1:$PORT/$DB" --scenario webhook --rate "$RATE" \
  --idle-routes "$IDLE" --latency-for "${SECONDS_}s" | sed 's/^row webhook/row target-webhook/' | tee -a "$work/tidings"
"$TIDINGS" redis --url "redis://127.0.0.1:$PORT/$DB" --scenario webhook --rate 500 \
  --idle-routes 0 --latency-for "${SECONDS_}s" | sed 's/^row webhook/row busy-webhook/' | tee -a "$work/tidings"
"$TIDINGS" redis --url "redis://127.0.0.1:$PORT/$DB" --scenario webhook --rate 5 \
  --idle-routes 2 --latency-for 20s | sed 's/^row webhook/row idle-webhook/' | tee -a "$work/tidings"

echo "== LeanMQ 0.2.0 (bench/peers/leanmq_bench.py)"
$PY bench/peers/leanmq_bench.py --port "$PORT" --db "$DB" --n "$N" --only send,consume10,consume100 \
  | tee "$work/leanmq"
$PY bench/peers/leanmq_bench.py --port "$PORT" --db "$DB" --only webhook --rate 500 \
  --idle-routes 0 --seconds "$SECONDS_" | sed 's/^row webhook/row busy-webhook/' | tee -a "$work/leanmq"
$PY bench/peers/leanmq_bench.py --port "$PORT" --db "$DB" --only webhook --rate 5 \
  --idle-routes 2 --seconds 20 | sed 's/^row webhook/row idle-webhook/' | tee -a "$work/leanmq"

echo "== redis-benchmark -P 16 XADD of a 1 KB field (the Redis limit)"
payload=$(head -c 1024 /dev/zero | tr '\0' x)
redis-cli -p "$PORT" -n "$DB" del rb-bench >/dev/null
limit=$(redis-benchmark -p "$PORT" --dbnum "$DB" -q -n 200000 -P 16 XADD rb-bench '*' data "$payload" |
  tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
redis-cli -p "$PORT" -n "$DB" del rb-bench >/dev/null
echo "  redis-benchmark -P 16: $limit XADD/s"
value() { grep "^row $2 " "$1" | awk '{print $3}'; }
echo
echo "== side by side (same Redis, same run)"
printf '%-22s %14s %14s %10s\n' row tidings leanmq ratio
for r in send-one receive-ack-10 receive-ack-100; do
  t=$(value "$work/tidings" "$r"); l=$(value "$work/leanmq" "$r")
  printf '%-26s %12.0f/s %12.0f/s %9.1fx\n' "$r" "$t" "$l" "$(echo "$t / $l" | bc -l)"
done
for r in receive-ack-10-combined receive-ack-100-combined; do
  t=$(value "$work/tidings" "$r"); l=$(value "$work/leanmq" "${r%-combined}")
  printf '%-26s %12.0f/s %12.0f/s %9.1fx\n' "$r" "$t" "$l" "$(echo "$t / $l" | bc -l)"
done
for r in send-one receive-ack-10 receive-ack-10-combined receive-ack-100-combined; do
  t=$(value "$work/tidings" "$r-1thread"); base=${r%-combined}; l=$(value "$work/leanmq" "$base")
  printf '%-26s %12.0f/s %12.0f/s %9.1fx  (Tidings on a current-thread runtime)\n' "$r" "$t" "$l" "$(echo "$t / $l" | bc -l)"
done
# The floors: the least Redis work of the row, sent by redis-rs without Tidings (src/redis_floor.rs).
for r in send-one receive-ack-10; do
  t=$(value "$work/tidings" "$r-floor-1thread"); l=$(value "$work/leanmq" "$r")
  printf '%-26s %12.0f/s %12.0f/s %9.1fx  (floor: the most any client reaches in this shape)\n' "$r-floor" "$t" "$l" "$(echo "$t / $l" | bc -l)"
done
for r in send-concurrent send-batch send-batch4; do
  t=$(value "$work/tidings" "$r"); l=$(value "$work/leanmq" send-one)
  printf '%-26s %12.0f/s %12.0f/s %9.1fx  (vs LeanMQ send_message)\n' "$r" "$t" "$l" "$(echo "$t / $l" | bc -l)"
done
for r in busy-webhook-p50 busy-webhook-p99 idle-webhook-p50 idle-webhook-p99; do
  t=$(value "$work/tidings" "$r"); l=$(value "$work/leanmq" "$r")
  printf '%-26s %11.2f ms %11.2f ms %9.1fx lower\n' "$r" "$t" "$l" "$(echo "$l / $t" | bc -l)"
done
printf '%-26s %11.2f ms  (target: p99 < 5 ms at %s/s beside %s idle routes)\n' target-webhook-p99 \
  "$(value "$work/tidings" target-webhook-p99)" "$RATE" "$IDLE"
printf '%-26s %11.2f ms  (the same, Tidings on a current-thread runtime)\n' target-webhook-p99 \
  "$(value "$work/tidings" target-webhook-p99-1thread)"
t=$(value "$work/tidings" send-batch4)
printf '%-26s %12.0f/s %12.0f/s %9.0f%%  of redis-benchmark -P 16\n' "send-batch4" "$t" "$limit" "$(echo "100 * $t / $limit" | bc -l)"
