"""What every benchmark shares: the machine, the backend, a progress bar,
command counting, percentiles, the results file and the printed table.

Each benchmark writes ``bench/results/<name>.json``::

    {"name", "command", "parameters", "backend", "machine", "figures", "finished_at"}

so runs can be compared across machines and commits; ``figures`` holds the
keys the issue lists (e.g. ``by_rate`` for latency).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pymongo import monitoring

from watcher.ops import redact

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Commands that change documents, and those that read them.
WRITE_COMMANDS = frozenset({"update", "insert", "delete", "findAndModify"})
READ_COMMANDS = frozenset({"find", "aggregate", "getMore", "count", "distinct"})


# -- command line ----------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--full", action="store_true", help="the issue's sizes (slow: minutes per benchmark)")
    p.add_argument("--no-save", action="store_true", help="print the table only; leave bench/results alone")
    p.add_argument(
        "--tag", default="", help="write bench/results/<name>_<tag>.json instead (e.g. a variant of the watcher)"
    )
    return p


def result_name(name: str, args: argparse.Namespace) -> str:
    """``<name>.json`` at the default size, ``<name>_full.json`` at the
    issue's (so a quick run never replaces a full one), ``_<tag>`` after."""
    name = f"{name}_full" if getattr(args, "full", False) else name
    return f"{name}_{args.tag}" if getattr(args, "tag", "") else name


def mongodb_uri() -> str | None:
    """``MONGODB_URI`` (a real replica set) or None for the embedded engine.

    Benchmarks are measurement scripts, not the product: they read the same
    variable the test suite does, so ``MONGODB_URI=... ./dev bench NAME``
    measures against a real server.
    """
    return os.environ.get("MONGODB_URI") or None


# -- machine and backend ---------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    for dist in ("pymongo", "mongoeco", "anyio", "pydantic"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    info["git_commit"] = _git_commit()
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def backend(mode: str = "in-process", kind: str = "embedded") -> dict[str, Any]:
    """What the numbers were measured against (``kind`` as the test suite's
    resolver names it: uri, mongod, docker, embedded)."""
    if kind == "none":
        return {
            "kind": "none",
            "mode": mode,
            "detail": "database removed: a process plays the server over a pipe (bench/paced.py)",
        }
    if kind != "embedded":
        uri = mongodb_uri()
        return {"kind": kind, "uri": redact.uri(uri) if uri else None, "mode": mode}
    return {
        "kind": "embedded",
        "engine": "jobwatch embedded-server (mongoeco MemoryEngine, wire proxy, change streams)",
        "mode": mode,
    }


# -- progress --------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: float, *, enabled: bool | None = None) -> None:
        self.label = label
        self.total = max(total, 1e-9)
        self.done = 0.0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._shown_at = 0.0

    def advance(self, amount: float = 1.0) -> None:
        self.update(self.done + amount)

    def update(self, done: float) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown_at < 0.1 and done < self.total:
            return
        self._shown_at = now
        width = 30
        fraction = min(done / self.total, 1.0)
        bar = "#" * int(width * fraction) + "-" * (width - int(width * fraction))
        sys.stderr.write(f"\r{self.label[:40]:<40} [{bar}] {fraction:6.1%}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


# -- command counting ------------------------------------------------------


class CommandCounter(monitoring.CommandListener):
    """Counts the commands one client sends (PyMongo's command monitoring).

    Pass it as ``AsyncMongoClient(uri, event_listeners=[counter])``. It also
    counts the documents each read returned (``firstBatch``/``nextBatch``),
    which is what "documents read" means in these benchmarks.

    A ``getMore`` on a change-stream cursor is counted as ``changeStreamGetMore``,
    not as a read: it is the intake (the events the watcher must see), not a
    read of jobs on the hot path.
    """

    def __init__(self) -> None:
        self.by_name: Counter[str] = Counter()
        self.by_target: Counter[tuple[str, str]] = Counter()
        self.docs_returned = 0
        self.failures = 0
        self._collections: dict[int, str] = {}
        self._stream_cursors: set[int] = set()
        self._opening_streams: set[int] = set()
        self._stream_requests: set[int] = set()  # getMores on change-stream cursors in flight

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo", "saslStart", "saslContinue"}:
            return
        target = event.command.get(name)
        pipeline = event.command.get("pipeline") if name == "aggregate" else None
        if pipeline and isinstance(pipeline[0], dict) and "$changeStream" in pipeline[0]:
            name = "changeStream"  # opening the stream is the intake, not a read of jobs
            self._opening_streams.add(event.request_id)
        if name == "getMore" and event.command.get("getMore") in self._stream_cursors:
            name = "changeStreamGetMore"
            self._stream_requests.add(event.request_id)
        collection = target if isinstance(target, str) else event.command.get("collection", "")
        self._collections[event.request_id] = str(collection)
        self.by_name[name] += 1
        self.by_target[(name, str(collection))] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") if isinstance(event.reply, Mapping) else None
        if isinstance(cursor, Mapping):
            if event.request_id in self._opening_streams:
                self._stream_cursors.add(cursor.get("id", 0))  # 0: no cursor, never a getMore's
            elif event.request_id not in self._stream_requests:
                batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
                self.docs_returned += len(batch)
        self._opening_streams.discard(event.request_id)
        self._stream_requests.discard(event.request_id)
        self._collections.pop(event.request_id, None)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures += 1
        self._opening_streams.discard(event.request_id)
        self._stream_requests.discard(event.request_id)
        self._collections.pop(event.request_id, None)

    def reset(self) -> None:
        self.by_name.clear()
        self.by_target.clear()
        self.docs_returned = 0
        self.failures = 0

    def writes(self, collection: str | None = None) -> int:
        return self._sum(WRITE_COMMANDS, collection)

    def reads(self, collection: str | None = None) -> int:
        return self._sum(READ_COMMANDS, collection)

    def total(self) -> int:
        return sum(self.by_name.values())

    def _sum(self, names: Iterable[str], collection: str | None) -> int:
        wanted = set(names)
        if collection is None:
            return sum(n for name, n in self.by_name.items() if name in wanted)
        return sum(n for (name, coll), n in self.by_target.items() if name in wanted and coll == collection)


# -- statistics ------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (no interpolation: every figure is a real sample)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[min(rank, len(ordered)) - 1]


def distribution_ms(latencies_ms: Sequence[float]) -> dict[str, Any]:
    return {
        "p50_ms": _round(quantile(latencies_ms, 0.50)),
        "p95_ms": _round(quantile(latencies_ms, 0.95)),
        "p99_ms": _round(quantile(latencies_ms, 0.99)),
        "max_ms": _round(max(latencies_ms, default=math.nan)),
        "completions": len(latencies_ms),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, 3)


def _round(value: float, digits: int = 2) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def cpu_s(pid: int) -> float:
    """A process's CPU seconds so far (user + system, from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- results ---------------------------------------------------------------


def side_file(name: str, *, save_file: bool) -> Path:
    """Where a run writes a file beside its results (a profile's text):
    ``bench/results/<name>``, or with --no-save a temporary file, so a trial
    run never rewrites a committed one."""
    return RESULTS / name if save_file else Path(tempfile.gettempdir()) / f"jobwatch-bench-{name}"


def save(
    name: str,
    *,
    parameters: dict[str, Any],
    figures: dict[str, Any],
    backend_info: dict[str, Any],
    save_file: bool = True,
) -> Path | None:
    """Write ``bench/results/<name>.json``; returns its path (None with --no-save)."""
    if not save_file:
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "parameters": parameters,
        "backend": backend_info,
        "machine": machine(),
        "figures": figures,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    return path


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> str:
    """A plain aligned table (numbers right-aligned), printed and returned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(title)
    lines.append(
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    )
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if value else "0"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# -- the watcher's own histograms ------------------------------------------


def histogram(exposition: str, name: str, **labels: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one histogram series in a ``/metrics`` text."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(exposition):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(sample.labels.get(k) == v for k, v in labels.items()):
                buckets.append((float(sample.labels["le"]), sample.value))
    return sorted(buckets)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket the rank falls in."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 0.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def histogram_ms(exposition: str, name: str, **labels: str) -> dict[str, Any]:
    """p50/p99 (ms) and count of one of the watcher's histograms, as Prometheus would compute them."""
    buckets = histogram(exposition, name, **labels)
    p50, p99 = histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.99)
    return {
        "p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "count": int(buckets[-1][1]) if buckets else 0,
    }
