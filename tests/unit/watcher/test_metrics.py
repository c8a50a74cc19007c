"""What /metrics says: no *_created series, completions by source, job and
stage latency apart, the job-type label bounded."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from watcher.ops.metrics import OTHER_JOB_TYPES, Metrics


def scraped(metrics: Metrics) -> dict[str, float]:
    """Every sample as Prometheus would scrape it, by name and labels."""
    text = metrics.exposition().decode()
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_no_created_series_are_exposed() -> None:
    metrics = Metrics()
    metrics.completed("stream", stages=1, job=True, latency_s=0.1)
    samples = scraped(metrics)
    assert samples and not [name for name in samples if "_created" in name]
    assert any(name.startswith("jobwatch_jobs_completed_total") for name in samples)


def test_completions_are_counted_by_source_and_timed_apart() -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    for source in ("stream", "sweep"):  # present at 0 before the first completion
        assert sample("jobwatch_stages_completed_total", {"source": source}) == 0.0
        assert sample("jobwatch_jobs_completed_total", {"source": source}) == 0.0
    metrics.completed("stream", stages=2, job=True, latency_s=0.02)  # the event completed two stages and the job
    metrics.completed("stream", stages=1, job=False, latency_s=0.5)  # one stage, the job stays open
    metrics.completed("sweep", stages=1, job=True, latency_s=None)  # a sweep: no event, no latency
    assert sample("jobwatch_stages_completed_total", {"source": "stream"}) == 3.0
    assert sample("jobwatch_stages_completed_total", {"source": "sweep"}) == 1.0
    assert sample("jobwatch_jobs_completed_total", {"source": "sweep"}) == 1.0
    assert sample("jobwatch_stage_completion_latency_seconds_count", {}) == 3.0  # one per stage
    assert sample("jobwatch_job_completion_latency_seconds_count", {}) == 1.0
    assert sample("jobwatch_job_completion_latency_seconds_bucket", {"le": "0.025"}) == 1.0
    assert sample("jobwatch_stage_completion_latency_seconds_bucket", {"le": "0.025"}) == 2.0


def test_job_type_series_follow_the_census() -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    metrics.publish_by_job_type({"scan": 3, OTHER_JOB_TYPES: 2}, {"scan": 1})
    assert sample("jobwatch_open_jobs", {"job_type": "scan"}) == 3.0
    assert sample("jobwatch_done_but_open_jobs", {"job_type": "scan"}) == 1.0
    assert sample("jobwatch_done_but_open_jobs", {"job_type": OTHER_JOB_TYPES}) == 0.0
    metrics.publish_by_job_type({"resize": 1}, {})
    assert sample("jobwatch_open_jobs", {"job_type": "scan"}) is None  # gone with its jobs
    assert sample("jobwatch_open_jobs", {"job_type": OTHER_JOB_TYPES}) == 0.0  # never an empty family
    assert sample("jobwatch_open_jobs", {"job_type": "resize"}) == 1.0


async def test_the_sweep_interval_is_exported_for_the_alerts() -> None:
    from pymongo import AsyncMongoClient

    from watcher import Settings, Watcher

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient("mongodb://127.0.0.1:9/", connect=False)
    try:
        watcher = Watcher(client, Settings(sweep_interval_s=120, health_port=0))
        assert watcher.metrics.registry.get_sample_value("jobwatch_sweep_interval_seconds", {}) == 120.0
    finally:
        await client.close()


def test_a_batch_of_lags_counts_as_observing_them_one_by_one() -> None:
    """The stream observes a batch's event lags at once (a lock per bucket
    touched, not two per event): the scrape must not tell the difference,
    at a bucket's bound, between bounds, beyond the last, NaN included."""
    from watcher.ops.metrics import LATENCY_BUCKETS_S

    lags = [0.0, 0.0005, 0.00051, 0.003, 0.0125, 0.07, 59.0, 60.0, 61.0, 1e9, float("nan"), 0.0005, -1.0]
    lags += [bound for bound in LATENCY_BUCKETS_S] + [bound * 1.0001 for bound in LATENCY_BUCKETS_S]
    one_by_one, batched = Metrics(), Metrics()
    for lag in lags:
        one_by_one.event_lag.observe(lag)
    batched.events_lagged(lags[:7])
    batched.events_lagged(lags[7:])
    batched.events_lagged([])
    expected, got = scraped(one_by_one), scraped(batched)
    assert {k: v for k, v in got.items() if "_sum" not in k} == {k: v for k, v in expected.items() if "_sum" not in k}
    assert [k for k in got if "event_lag_seconds_bucket" in k]
    assert repr(got["jobwatch_event_lag_seconds_sum[]"]) == repr(expected["jobwatch_event_lag_seconds_sum[]"])  # nan


def test_a_batch_of_finite_lags_adds_their_sum() -> None:
    metrics = Metrics()
    metrics.events_lagged([0.001, 0.002, 0.25])
    sample = metrics.registry.get_sample_value
    assert sample("jobwatch_event_lag_seconds_count") == 3.0
    assert abs((sample("jobwatch_event_lag_seconds_sum") or 0) - 0.253) < 1e-12
    assert sample("jobwatch_event_lag_seconds_bucket", {"le": "0.002"}) == 2.0
