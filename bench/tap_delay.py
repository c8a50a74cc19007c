"""How long an acknowledged write takes to reach a waiting change-stream reader of the embedded server.

    ./dev bench tap_delay                      # 200 and 500 $inc/s, 10 s each
    ./dev bench tap_delay --rates 100 300 --seconds 20

The server (``python -m jobwatch_embedded``) runs in a process of its own. In
this process a writer thread ``$inc``s one counter at a paced rate (each write
due at ``start + n / rate``; it also sets ``seq: n``) and notes when each write
was acknowledged; a reader thread holds a change stream on the collection
(PyMongo's default ``getMore`` wait, as the watcher reads) and notes when the
event of each ``seq`` arrived. The delay of a write is its event's arrival
minus its acknowledgement (both ``time.monotonic()`` in this process), and the
figures are its p50/p99/max over the run, with the writes that fell behind
their schedule (the server or this machine could not keep the rate).

With ``--scan-docs N`` a third client, in a process of its own, reads all of
N documents every ``SCAN_PAUSE_S`` (a sweep's or a census's query, as the
watcher runs them): commands that hold the server's event loop for a while, as a
busy server has them, between a write's acknowledgement and its recording.

Both clients share this process: its own scheduling adds to the figures, so
they are an upper bound of the server's part. Machine load is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from pymongo import MongoClient

WARMUP_S = 1.0
SCAN_PAUSE_S = 0.1


def start_server() -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "jobwatch_embedded", "--port", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    uri = process.stdout.readline().strip()
    if not uri.startswith("mongodb://"):
        process.kill()
        raise SystemExit(f"tap_delay: the server did not start (first line {uri!r})")
    return process, uri


def run(uri: str, rate: float, seconds: float) -> dict[str, Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    coll = client.bench.tap_delay
    coll.drop()
    coll.insert_one({"_id": 1, "n": 0, "seq": -1})
    acked: dict[int, float] = {}
    received: dict[int, float] = {}
    total = int(rate * seconds)
    ready = threading.Event()
    done = threading.Event()

    def read() -> None:
        with coll.watch() as stream:
            ready.set()
            while not done.is_set() or len(received) < len(acked):
                change = stream.try_next()
                if change is None:
                    if done.is_set() and time.monotonic() > deadline_s:
                        return
                    continue
                fields = (change.get("updateDescription") or {}).get("updatedFields") or {}
                if "seq" in fields:
                    received[int(fields["seq"])] = time.monotonic()

    deadline_s = float("inf")
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait()
    behind = 0
    start = time.monotonic()
    for n in range(total):
        due = start + n / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.1:
            behind += 1
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}, "$set": {"seq": n}})
        acked[n] = time.monotonic()
    elapsed = time.monotonic() - start
    deadline_s = time.monotonic() + 15
    done.set()
    reader.join(timeout=20)
    client.close()
    delays_ms = sorted((received[n] - acked[n]) * 1000 for n in acked if n in received and acked[n] >= start + WARMUP_S)
    missing = sum(1 for n in acked if n not in received)

    def quantile(q: float) -> float:
        return round(delays_ms[min(len(delays_ms) - 1, int(q * len(delays_ms)))], 1) if delays_ms else float("nan")

    return {
        "rate_per_s": rate,
        "achieved_per_s": round(total / elapsed, 1),
        "writes": total,
        "behind_schedule": behind,
        "missing_events": missing,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "max_ms": round(delays_ms[-1], 1) if delays_ms else float("nan"),
        "mean_ms": round(statistics.fmean(delays_ms), 1) if delays_ms else float("nan"),
    }


def scan(uri: str, docs: int) -> None:
    """The scanning client (its own process): until killed."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    coll = client.bench.scanned
    coll.drop()
    coll.insert_many(
        [{"i": i, "stages": {f"s{k}": {"completedItems": k, "totalItems": 9} for k in range(5)}} for i in range(docs)]
    )
    while True:
        list(coll.find({"$expr": {"$gte": ["$i", 0]}}))
        time.sleep(SCAN_PAUSE_S)


def main() -> None:
    if sys.argv[1:2] == ["--scan"]:
        scan(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[200.0, 500.0], help="$inc/s to run, one after another"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--scan-docs", type=int, default=0, help="a client scanning this many documents meanwhile")
    arguments = parser.parse_args()
    process, uri = start_server()
    scanner = None
    if arguments.scan_docs:
        scanner = subprocess.Popen([sys.executable, __file__, "--scan", uri, str(arguments.scan_docs)])
    try:
        print(
            json.dumps({"load_average": os.getloadavg(), "cpus": os.cpu_count(), "scan_docs": arguments.scan_docs}),
            flush=True,
        )
        for rate in arguments.rates:
            print(json.dumps(run(uri, rate, arguments.seconds)), flush=True)
    finally:
        if scanner is not None:
            scanner.kill()
            scanner.wait()
        process.terminate()
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
