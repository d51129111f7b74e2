"""LeanMQ 0.2.0's side of bench/peers/leanmq-side-by-side.sh: the same rows
as `tidings-bench redis`, measured the way the LeanMQ reference measured
them (one synchronous client; webhook latency from a producer process to a
run_service() process, stamped with time.time()).

Prints `row <name> <value> <unit>` lines.
"""

import argparse
import json
import multiprocessing
import os
import time

from leanmq import LeanMQ, LeanMQWebhook

PAD = "x" * 1000


def connect(a, prefix):
    return LeanMQ(redis_host=a.host, redis_port=a.port, redis_db=a.db, prefix=prefix)


def row(name, value, unit):
    print(f"row {name} {value:.2f} {unit}", flush=True)


def bench_send(a, prefix):
    mq = connect(a, prefix)
    q, _ = mq.create_queue_pair("send")
    n = a.n // 5
    start = time.perf_counter()
    for i in range(n):
        q.send_message({"i": i, "pad": PAD})
    row("send-one", n / (time.perf_counter() - start), "msg/s")
    mq.delete_queue("send")


def bench_consume(a, prefix, count):
    mq = connect(a, prefix)
    name = f"consume{count}"
    q, _ = mq.create_queue_pair(name)
    pipe = mq.client.pipeline(transaction=False)
    for i in range(a.n):
        pipe.xadd(q.name, {"data": json.dumps({"i": i, "pad": PAD, "_metadata": {
            "id": str(i), "timestamp": time.time(), "ttl": None}})})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    done = 0
    start = time.perf_counter()
    while done < a.n:
        got = q.get_messages(count=count)
        if not got:
            break
        q.acknowledge_messages([m.id for m in got])
        done += len(got)
    row(f"receive-ack-{count}", done / (time.perf_counter() - start), "msg/s")
    mq.delete_queue(name)


def serve(a, prefix, ready, out):
    hook = LeanMQWebhook(redis_host=a.host, redis_port=a.port, redis_db=a.db, prefix=prefix)
    latencies = []

    def measured(data):
        latencies.append((time.time() - data["sent"]) * 1000)
        if len(latencies) >= a.total:
            done.set()

    done = multiprocessing.Event()
    for i in range(a.idle_routes):
        hook.get(f"/idle/{i}")(lambda data: None)
    hook.get("/measured")(measured)
    service = hook.run_service(handle_signals=False)
    ready.set()
    done.wait(a.seconds + 30)
    service.stop()
    out.put(latencies)


def bench_webhook(a, prefix):
    a.total = int(a.rate * a.seconds)
    ready, out = multiprocessing.Event(), multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(a, prefix, ready, out))
    server.start()
    ready.wait(30)
    time.sleep(1.5)  # every idle route's first poll has begun
    hook = LeanMQWebhook(redis_host=a.host, redis_port=a.port, redis_db=a.db, prefix=prefix)
    interval = 1.0 / a.rate
    start = time.perf_counter()
    for i in range(a.total):
        due = start + i * interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        hook.send("/measured", {"sent": time.time(), "pad": PAD})
    achieved = a.total / (time.perf_counter() - start)
    latencies = sorted(out.get(timeout=a.seconds + 60))
    server.join()
    at = lambda q: latencies[int((len(latencies) - 1) * q)]
    print(f"  webhook: {a.rate} msg/s asked, {achieved:.0f} msg/s sent, {len(latencies)} handled, "
          f"{a.idle_routes} idle routes: p50 {at(0.5):.2f} ms, p99 {at(0.99):.2f} ms", flush=True)
    row("webhook-p50", at(0.5), "ms")
    row("webhook-p99", at(0.99), "ms")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--db", type=int, default=0)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--idle-routes", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--only", default="send,consume10,consume100,webhook")
    a = p.parse_args()
    prefix = f"leanmq-bench:{os.getpid()}:"
    only = a.only.split(",")
    if "send" in only:
        bench_send(a, prefix)
    if "consume10" in only:
        bench_consume(a, prefix, 10)
    if "consume100" in only:
        bench_consume(a, prefix, 100)
    if "webhook" in only:
        bench_webhook(a, prefix + "webhook:")


if __name__ == "__main__":
    main()
