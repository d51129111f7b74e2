"""How long a small synced append waits while another process writes large files.

A one-off measurement behind docs/decisions/0017-small-table-files.md. It stands
for the store's writer thread (a few hundred bytes appended to a journal and
`fdatasync`ed, 1,000 times a second) next to an LSM's flushes and compactions (a
table file written in 1 MiB writes and `fsync`ed once at the end, one after the
other). Nothing to build; run from the repository root:

    python3 bench/disk/fsync_probe.py --table-mib 64     # fjall's default table size
    python3 bench/disk/fsync_probe.py --table-mib 8
    python3 bench/disk/fsync_probe.py --table-mib 0      # no background writer

It prints the append's `fdatasync` latency percentiles. The data goes to
--dir (default: a temporary directory on the current file system) and is removed.
"""

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time


def write_tables(directory, table_mib, pause_ms, stop):
    """Writes table files of `table_mib` MiB in 1 MiB writes, fsync at the end of each."""
    chunk = os.urandom(1 << 20)
    n = 0
    while not stop.is_set():
        path = os.path.join(directory, f"table-{n % 4}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(table_mib):
                if stop.is_set():
                    break
                os.write(fd, chunk)
                if pause_ms:
                    time.sleep(pause_ms / 1000)
            os.fsync(fd)
        finally:
            os.close(fd)
        n += 1


def append_and_sync(directory, seconds, rate):
    """Appends 300 bytes and fdatasyncs, `rate` times a second; returns latencies in ms."""
    fd = os.open(os.path.join(directory, "journal"), os.O_WRONLY | os.O_CREAT, 0o644)
    record = os.urandom(300)
    latencies = []
    interval = 1.0 / rate
    deadline = time.monotonic() + seconds
    due = time.monotonic()
    try:
        while time.monotonic() < deadline:
            os.write(fd, record)
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - started) * 1000)
            due += interval
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    finally:
        os.close(fd)
    return sorted(latencies)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-mib", type=int, default=64, help="0: no background writer")
    parser.add_argument("--pause-ms", type=float, default=0, help="pause after each 1 MiB write")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="fsync-probe-", dir=args.dir or os.getcwd())
    stop = multiprocessing.Event()
    writer = None
    if args.table_mib > 0:
        writer = multiprocessing.Process(
            target=write_tables, args=(directory, args.table_mib, args.pause_ms, stop)
        )
        writer.start()
    try:
        latencies = append_and_sync(directory, args.seconds, args.rate)
    finally:
        stop.set()
        if writer:
            writer.join()
        shutil.rmtree(directory, ignore_errors=True)

    def at(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    print(
        f"tables {args.table_mib} MiB (pause {args.pause_ms} ms): {len(latencies)} syncs, "
        f"p50 {at(0.5):.2f} ms, p99 {at(0.99):.2f} ms, p99.9 {at(0.999):.2f} ms, "
        f"max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
