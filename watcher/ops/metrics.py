"""Prometheus metrics, one registry per watcher (two watchers in one process,
as in tests, do not share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.stream_lag = Gauge("jobwatch_stream_lag_seconds", "Age of the newest event read when it was read", registry=r)
        self.position_age = Gauge("jobwatch_position_age_seconds", "Seconds since the position was last saved", registry=r)
        self.pending_jobs = Gauge("jobwatch_pending_jobs", "Jobs waiting for or in evaluation", registry=r)
        self.sweep_duration = Histogram(
            "jobwatch_sweep_duration_seconds", "Duration of sweeps", buckets=(0.1, 0.5, 1, 5, 15, 60, 300), registry=r
        )
        self.sweep_findings = Counter("jobwatch_sweep_findings", "What sweeps found", ["kind"], registry=r)
        self.errors = Counter("jobwatch_errors", "Errors by class and action", ["error", "action"], registry=r)
        self.jobs_skipped = Counter(
            "jobwatch_jobs_skipped", "Jobs skipped (unreadable, or a write the server refused)", ["reason"], registry=r
        )
        self.backlog_tokens = Gauge("jobwatch_backlog_tokens", "Change-stream positions read but not yet handled", registry=r)
        self.streaming = Gauge("jobwatch_streaming", "1 while the change stream is open", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
