"""Tidings and LeanMQ 0.2.0 in alternating short trials, for the rows that a
round trip bounds (one awaited send; receive + ack by 10).

This machine has slow and fast phases lasting seconds, which move a whole
side-by-side run (both sides, but not by the same factor). Here each trial
measures the floor (the least Redis work of the row, sent by redis-rs alone),
Tidings and LeanMQ within a few seconds of each other, and the ratios are
taken per trial; the medians over trials are the figures to read.

    .venv/bin/python bench/peers/leanmq_paired.py [--trials 9]   # from the project root

Needs target/release/tidings-bench (cargo build --release --bin tidings-bench) and
leanmq==0.2.0 in the running Python. Uses Redis database 15.
"""

import argparse
import statistics
import subprocess
import sys


def rows(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "row":
            found[parts[1]] = float(parts[2])
    return found


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=9)
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--current-thread", action="store_true",
                   help="Tidings on a current-thread runtime")
    a = p.parse_args()
    url = f"redis://127.0.0.1:{a.port}/15"
    tidings = ["target/release/tidings-bench", "redis", "--url", url, "--messages", "20000",
               "--scenario", "receive-ack10-floor", "--scenario", "receive-ack10-combined",
               "--scenario", "send-one-floor", "--scenario", "send-one"]
    if a.current_thread:
        tidings.append("--current-thread")
    leanmq = [sys.executable, "bench/peers/leanmq_bench.py", "--port", str(a.port), "--db", "15",
              "--n", "5000", "--only", "send,consume10"]
    shapes = [
        ("receive + ack by 10", "receive-ack-10-combined", "receive-ack-10-floor", "receive-ack-10"),
        ("send, one per awaited call", "send-one", "send-one-floor", "send-one"),
    ]
    ratios = {shape[0]: [] for shape in shapes}
    print("trial  row                          tidings/s    floor/s   leanmq/s  tidings÷leanmq  floor÷leanmq")
    for trial in range(1, a.trials + 1):
        t = rows(tidings)
        m = rows(leanmq)
        for name, ours, floor, theirs in shapes:
            r = (t[ours] / m[theirs], t[floor] / m[theirs])
            ratios[name].append(r)
            print(f"{trial:>5}  {name:<26} {t[ours]:>10.0f} {t[floor]:>10.0f} {m[theirs]:>10.0f}"
                  f" {r[0]:>14.1f}x {r[1]:>12.1f}x", flush=True)
    print()
    for name, rs in ratios.items():
        ours = statistics.median(r[0] for r in rs)
        floor = statistics.median(r[1] for r in rs)
        met = sum(1 for r in rs if r[0] >= 10)
        print(f"median  {name:<26} tidings {ours:.1f}x LeanMQ (>= 10x in {met} of {len(rs)} trials),"
              f" floor {floor:.1f}x")


if __name__ == "__main__":
    main()
