"""Prometheus metrics, one registry per watcher (two watchers in one process,
as in tests, do not share counters).

Names follow Prometheus' conventions: ``jobwatch_`` prefix, base units
(seconds), ``_total`` on counters (added by prometheus_client), timestamps as
``_timestamp_seconds`` gauges of unix time, 0/1 gauges for states. The README
lists each one; the alert rules in deploy/prometheus use only these names
(a test checks it against ``names()``).
"""

from __future__ import annotations

import time
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: The watcher's timings, fine below 100 ms: a quantile interpolated within a
#: bucket is only as exact as the bucket is narrow.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0065, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.065, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
SKIP_REASONS = ("unreadable", "write_refused")


def version() -> str:
    """jobwatch's installed version (``jobwatch --version``, ``jobwatch_build_info``)."""
    try:
        return metadata.version("jobwatch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("jobwatch_build_info", "Always 1; the labels say which jobwatch runs", ["version"], registry=r)
        self.build_info.labels(version()).set(1)
        self.events = Counter("jobwatch_events_received", "Change events received", ["operation"], registry=r)
        self.evaluations = Counter("jobwatch_evaluations", "Rule evaluations", ["source", "outcome"], registry=r)
        self.writes = Counter(
            "jobwatch_writes", "Conditional updates sent", ["source", "kind", "result"], registry=r
        )
        self.stages_completed = Counter("jobwatch_stages_completed", "Stages the watcher completed", registry=r)
        self.jobs_completed = Counter("jobwatch_jobs_completed", "Jobs the watcher completed", ["source"], registry=r)
        self.completion_latency = Histogram(
            "jobwatch_completion_latency_seconds",
            "From the completing change event's server time to the acknowledged write",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.event_lag = Histogram(
            "jobwatch_event_lag_seconds",
            "From each change event's server time (wallTime, else clusterTime) to the watcher reading it",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.decision = Histogram(
            "jobwatch_decision_seconds",
            "From the watcher reading a job's newest event to its write being acknowledged, by the write's kind",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.position_age = Gauge("jobwatch_position_age_seconds", "Seconds since the position was last saved", registry=r)
        self.pending_jobs = Gauge("jobwatch_pending_jobs", "Backlog: jobs waiting for or in evaluation", registry=r)
        self.sweep_duration = Histogram(
            "jobwatch_sweep_duration_seconds", "Duration of sweeps", buckets=(0.1, 0.5, 1, 5, 15, 60, 300), registry=r
        )
        self.sweep_findings = Counter("jobwatch_sweep_findings", "What sweeps found", ["kind"], registry=r)
        self.skipped_jobs = Counter(
            "jobwatch_skipped_jobs", "Jobs left untouched because they cannot be read or the server refused the write", ["reason"], registry=r
        )
        for reason in SKIP_REASONS:  # present at 0, so rate() sees the first skip
            self.skipped_jobs.labels(reason)
        self.errors = Counter("jobwatch_errors", "Errors by class and action", ["error", "action"], registry=r)
        self.backlog_tokens = Gauge("jobwatch_backlog_tokens", "Change-stream positions read but not yet handled", registry=r)
        self.streaming = Gauge("jobwatch_stream_open", "1 while the change stream is open", registry=r)
        self.degraded = Gauge("jobwatch_degraded", "1 in degraded mode: no change stream, sweeps only", registry=r)
        self.observe_mode = Gauge("jobwatch_observe_mode", "1 when running with --observe (nothing is written)", registry=r)
        self.last_event = Gauge(
            "jobwatch_last_event_timestamp_seconds", "Unix time the last change event was received (0: none yet)", registry=r
        )
        self.last_sweep = Gauge(
            "jobwatch_last_sweep_success_timestamp_seconds", "Unix time the last sweep finished without error (0: none yet)", registry=r
        )
        # The job census (storage/census.py), refreshed every census_interval_s.
        self.open_jobs = Gauge("jobwatch_open_jobs", "Jobs whose status is not terminal", registry=r)
        self.done_but_open = Gauge(
            "jobwatch_done_but_open_jobs", "Open jobs whose every stage counter says done: should be 0 between events", registry=r
        )
        self.oldest_open_age = Gauge(
            "jobwatch_oldest_open_job_age_seconds", "Age of the oldest open job (createdAt, else its ObjectId's time)", registry=r
        )
        self.census_time = Gauge("jobwatch_census_timestamp_seconds", "Unix time of the last successful job census", registry=r)
        #: Plain copies of the two timestamps for the heartbeat document.
        self.last_event_at: float | None = None
        self.last_sweep_at: float | None = None

    def event_received(self, at: float | None = None) -> None:
        """Change events were received (``at``: unix time, default now)."""
        self.last_event_at = time.time() if at is None else at
        self.last_event.set(self.last_event_at)

    def sweep_succeeded(self) -> None:
        self.last_sweep_at = time.time()
        self.last_sweep.set(self.last_sweep_at)

    def skipped(self, reason: str) -> None:
        self.skipped_jobs.labels(reason if reason in SKIP_REASONS else "unreadable").inc()

    def names(self) -> set[str]:
        """Every series name this registry can expose (``_total``, ``_bucket``...
        included), whether or not a labelled series has been seen yet."""
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        return {family.name + suffix for family in self.registry.collect() for suffix in suffixes.get(family.type, ("",))}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
