"""Prometheus metrics, one registry per watcher (two watchers in one process,
as in tests, do not share counters).

Names follow Prometheus' conventions: ``jobwatch_`` prefix, base units
(seconds), ``_total`` on counters (added by prometheus_client), timestamps as
``_timestamp_seconds`` gauges of unix time, 0/1 gauges for states. Label
values that come from documents (``job_type``) are bounded in number and
length. docs/reference/metrics.md is generated from this registry (``./dev
docs gen``), help texts included; the alert rules in deploy/prometheus use
only these names (a test checks it against ``names()``).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

_Family = TypeVar("_Family", bound=MetricWrapperBase)

#: The watcher's timings, fine below 100 ms: a quantile interpolated within a
#: bucket is only as exact as the bucket is narrow.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0065,
    0.008,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.065,
    0.08,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
SKIP_REASONS = ("unreadable", "write_refused")
#: Where a write came from: the change stream or a sweep.
SOURCES = ("stream", "sweep")
#: ``job_type`` label values kept: the types with the most open jobs, then ``OTHER_JOB_TYPES``.
JOB_TYPE_LABELS = 10
OTHER_JOB_TYPES = "other"
#: How a partition's lease changed hands here: taken, given up in order (stop, rebalance), or lost.
LEADERSHIP_CHANGES = ("acquired", "released", "lost")


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
        self._series: dict[tuple[object, ...], MetricWrapperBase] = {}  # (id(family), *labels) -> series
        self.build_info = Gauge(
            "jobwatch_build_info", "Always 1; the labels say which jobwatch runs", ["version"], registry=r
        )
        self.build_info.labels(version()).set(1)
        self.events = Counter("jobwatch_events_received", "Change events received", ["operation"], registry=r)
        self.evaluations = Counter("jobwatch_evaluations", "Rule evaluations", ["source", "outcome"], registry=r)
        self.writes = Counter("jobwatch_writes", "Conditional updates sent", ["source", "kind", "result"], registry=r)
        self.stages_completed = Counter(
            "jobwatch_stages_completed", "Stages the watcher completed", ["source"], registry=r
        )
        self.jobs_completed = Counter("jobwatch_jobs_completed", "Jobs the watcher completed", ["source"], registry=r)
        for source in SOURCES:  # present at 0, so rate() sees the first completion
            self.series(self.stages_completed, source)
            self.series(self.jobs_completed, source)
        self.job_completion_latency = Histogram(
            "jobwatch_job_completion_latency_seconds",
            "Jobs: from the change event that completed the job (its server time) to the job's completing write "
            "acknowledged",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_completion_latency = Histogram(
            "jobwatch_stage_completion_latency_seconds",
            "Stages: from the change event that completed the stage (its server time) to the stage's completing write "
            "acknowledged (one observation per stage)",
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
        self.position_saved = Gauge(
            "jobwatch_position_saved_timestamp_seconds",
            "Unix time this instance last saved the partition's position",
            ["partition"],
            registry=r,
        )
        # Leadership (watcher/group): which partitions this instance holds.
        self.leader = Gauge(
            "jobwatch_leader", "1 while this instance holds the partition's lease, else 0", ["partition"], registry=r
        )
        self.lease_term = Gauge(
            "jobwatch_lease_term",
            "Term of the partition's lease this instance holds (0: not held)",
            ["partition"],
            registry=r,
        )
        self.leadership_changes = Counter(
            "jobwatch_leadership_changes",
            "Partition leases this instance acquired, released or lost",
            ["change"],
            registry=r,
        )
        for change in LEADERSHIP_CHANGES:  # present at 0, so increase() sees the first one
            self.leadership_changes.labels(change)
        self.partitions_held = Gauge(
            "jobwatch_partitions_held", "Partitions whose lease this instance holds", registry=r
        )
        self.pending_jobs = Gauge("jobwatch_pending_jobs", "Backlog: jobs waiting for or in evaluation", registry=r)
        self.sweep_duration = Histogram(
            "jobwatch_sweep_duration_seconds", "Duration of sweeps", buckets=(0.1, 0.5, 1, 5, 15, 60, 300), registry=r
        )
        self.sweep_findings = Counter("jobwatch_sweep_findings", "What sweeps found", ["kind"], registry=r)
        self.sweep_interval = Gauge(
            "jobwatch_sweep_interval_seconds",
            "Seconds between periodic sweeps now (degraded_sweep_interval_s in degraded mode): alerts judge the last "
            "sweep's age by it",
            registry=r,
        )
        self.skipped_jobs = Counter(
            "jobwatch_skipped_jobs",
            "Jobs left untouched because they cannot be read or the server refused the write",
            ["reason"],
            registry=r,
        )
        for reason in SKIP_REASONS:  # present at 0, so rate() sees the first skip
            self.skipped_jobs.labels(reason)
        self.errors = Counter("jobwatch_errors", "Errors by class and action", ["error", "action"], registry=r)
        self.backlog_tokens = Gauge(
            "jobwatch_backlog_tokens", "Change-stream positions read but not yet handled", registry=r
        )
        self.streaming = Gauge("jobwatch_stream_open", "1 while the change stream is open", registry=r)
        self.degraded = Gauge("jobwatch_degraded", "1 in degraded mode: no change stream, sweeps only", registry=r)
        self.observe_mode = Gauge(
            "jobwatch_observe_mode", "1 when running with --observe (nothing is written, no lease taken)", registry=r
        )
        self.last_event = Gauge(
            "jobwatch_last_event_timestamp_seconds",
            "Unix time the last change event was received (0: none yet)",
            registry=r,
        )
        self.last_sweep = Gauge(
            "jobwatch_last_sweep_success_timestamp_seconds",
            "Unix time the last sweep finished without error (0: none yet)",
            registry=r,
        )
        # The job census (storage/census.py), refreshed every census_interval_s.
        self.open_jobs = Gauge(
            "jobwatch_open_jobs",
            "Jobs whose status is not terminal, by job type (the most common types, then other)",
            ["job_type"],
            registry=r,
        )
        self.done_but_open = Gauge(
            "jobwatch_done_but_open_jobs",
            "Open jobs whose every stage counter says done, by job type: should be 0 between events",
            ["job_type"],
            registry=r,
        )
        self._job_types: set[str] = set()
        self.oldest_open_age = Gauge(
            "jobwatch_oldest_open_job_age_seconds",
            "Age of the oldest open job (createdAt, else its ObjectId's time)",
            registry=r,
        )
        self.census_time = Gauge(
            "jobwatch_census_timestamp_seconds", "Unix time of the last successful job census", registry=r
        )
        #: Plain copies of the two timestamps for the heartbeat document.
        self.last_event_at: float | None = None
        self.last_sweep_at: float | None = None

    def series(self, family: _Family, *labels: str) -> _Family:
        """``family.labels(*labels)``, looked up once: the hot path counts per
        event and per job, and prometheus_client's lookup takes a lock each time."""
        key = (id(family), *labels)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = family.labels(*labels)
        return cast(_Family, found)  # made by family.labels: of the family's type

    def event_received(self, at: float | None = None) -> None:
        """Change events were received (``at``: unix time, default now)."""
        self.last_event_at = time.time() if at is None else at
        self.last_event.set(self.last_event_at)

    def sweep_succeeded(self) -> None:
        self.last_sweep_at = time.time()
        self.last_sweep.set(self.last_sweep_at)

    def completed(self, source: str, *, stages: int, job: bool, latency_s: float | None) -> None:
        """Count one applied write's completions (``stages`` stages, and the job
        when ``job``), and their latency when the write came from an event."""
        if stages:
            self.series(self.stages_completed, source).inc(stages)
        if job:
            self.series(self.jobs_completed, source).inc()
        if latency_s is None:
            return
        for _ in range(stages):
            self.stage_completion_latency.observe(latency_s)
        if job:
            self.job_completion_latency.observe(latency_s)

    def publish_by_job_type(self, open_jobs: Mapping[str, int], done_but_open: Mapping[str, int]) -> None:
        """The census's counts by ``job_type`` label (already bounded by the
        caller). Series of types no longer counted are removed, after the new
        values are in: a scrape never sees the family empty."""
        labels = set(open_jobs) | set(done_but_open) | {OTHER_JOB_TYPES}
        for label in labels:
            self.open_jobs.labels(label).set(open_jobs.get(label, 0))
            self.done_but_open.labels(label).set(done_but_open.get(label, 0))
        for gone in self._job_types - labels:
            self.open_jobs.remove(gone)
            self.done_but_open.remove(gone)
        self._job_types = labels

    def partitions(self, count: int) -> None:
        """Show every partition, held or not (a standby says 0 for each)."""
        for partition in range(count):
            self.leader.labels(str(partition))
            self.lease_term.labels(str(partition))

    def events_lagged(self, lags_s: Sequence[float]) -> None:
        """One batch's event lags into ``event_lag`` at once: the same buckets,
        sum and count as one ``observe`` per event, for a lock per bucket
        touched instead of two per event."""
        observe_many(self.event_lag, lags_s)

    def skipped(self, reason: str) -> None:
        self.skipped_jobs.labels(reason if reason in SKIP_REASONS else "unreadable").inc()

    def names(self) -> set[str]:
        """Every series name this registry can expose (``_total``, ``_bucket``...
        included), whether or not a labelled series has been seen yet."""
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        return {
            family.name + suffix for family in self.registry.collect() for suffix in suffixes.get(family.type, ("",))
        }

    def exposition(self) -> bytes:
        """The Prometheus text, without prometheus_client's ``*_created``
        series (the creation time of each counter and histogram: half the
        lines, and nothing an alert or a dashboard here reads). Filtered here
        rather than switched off process-wide, which would change the metrics
        of an application that embeds the watcher."""
        return generate_latest(_WithoutCreated(self.registry))


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(value)`` for each of ``values``, adding each bucket's
    count and the sum once. Through prometheus_client's own fields (its bounds,
    bucket and sum values: ``tests/unit/watcher/test_metrics.py`` checks the
    result is the same as observing one by one); a histogram without them is
    observed one by one."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    refuse = getattr(histogram, "_raise_if_not_observable", None)  # a labelled histogram's parent
    if not values:
        return
    if bounds is None or buckets is None or total is None or refuse is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    refuse()
    counts: dict[int, int] = {}
    for value in values:
        if value == value:  # NaN is in no bucket (it adds to the sum), as observe() does it
            i = bisect.bisect_left(bounds, value)  # the first bound >= value, as observe() finds it
            counts[i] = counts.get(i, 0) + 1
    for i, n in counts.items():
        buckets[i].inc(n)
    total.inc(math.fsum(values))


class _WithoutCreated(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield family
