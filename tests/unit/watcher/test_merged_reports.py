"""One sweep report for the passes over several partitions."""

from __future__ import annotations

from watcher.group.pipeline import merged
from watcher.intake.sweep import JobChange, PathAWait, SweepReport


def _report(job: str, *, dry_run: bool, full: bool) -> SweepReport:
    return SweepReport(
        dry_run=dry_run,
        full=full,
        scanned=3,
        stages_completed=2,
        jobs_completed=1,
        progress_updated=1,
        stale=1,
        path_a_waiting=1,
        waiting=[PathAWait(job, ("thumbnail",))],
        skipped=[(job, "unreadable")],
        changes=[JobChange(job, "t", "job_completed", ("cache",), applied=not dry_run)],
        duration_s=0.5,
    )


def test_every_total_and_every_listed_job_of_each_partition_is_kept() -> None:
    total = merged([_report("a", dry_run=True, full=True), _report("b", dry_run=False, full=False)])
    assert (total.scanned, total.stages_completed, total.jobs_completed) == (6, 4, 2)
    assert (total.progress_updated, total.stale, total.path_a_waiting) == (2, 2, 2)
    assert [w.job_id for w in total.waiting] == ["a", "b"]  # as many listed as counted
    assert [job for job, _ in total.skipped] == ["a", "b"]
    assert [c.job_id for c in total.changes] == ["a", "b"]
    assert total.duration_s == 1.0  # one pass after another
    assert total.dry_run and not total.full


def test_one_partition_is_its_own_report() -> None:
    report = _report("a", dry_run=False, full=True)
    assert merged([report]) is report
