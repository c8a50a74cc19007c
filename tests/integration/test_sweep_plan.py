"""The sweep's cost follows the open jobs on a real server: both passes (the
open spellings' ``$in`` and the unknown statuses' ``$nin``) are index scans
of ``jobwatch_status_type`` whose bounds leave the terminal statuses out."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import embedded_differs
from tests.support.backends import Backend
from tests.support.harness import running, settings_for
from watcher.storage.store import SWEEP_INDEX, MongoJobStore


def stages_of(plan: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(plan, dict):
        if "stage" in plan:
            found.append(plan)
        for value in plan.values():
            found += stages_of(value)
    elif isinstance(plan, list):
        for value in plan:
            found += stages_of(value)
    return found


@embedded_differs("the embedded engine's explain() has another format and no index bounds")
@pytest.mark.parametrize("job_types", [(), ("x",)], ids=["all-types", "one-type"])
async def test_both_sweep_passes_use_the_index_and_skip_terminal_statuses(
    mongo: Backend, job_types: tuple[str, ...]
) -> None:
    if mongo.is_embedded:
        pytest.skip("explain() on the embedded engine does not report MongoDB's plan stages")
    await mongo.db.background_jobs.insert_many(
        [{"status": status, "jobType": "x"} for status in ("Completed", "Failed", "Cancelled", "Pending", "Queued")]
        * 20
    )
    async with running(mongo):
        pass  # creates the index
    store = MongoJobStore.from_settings(mongo.db, settings_for(mongo))
    plans = await store.explain_sweep(full=True, job_types=job_types)
    assert len(plans) == 2
    for plan in plans:
        winning = plan["queryPlanner"]["winningPlan"]
        scans = [stage for stage in stages_of(winning) if stage["stage"] == "IXSCAN"]
        assert scans and all(scan["indexName"] == SWEEP_INDEX for scan in scans), winning
        assert not [stage for stage in stages_of(winning) if stage["stage"] == "COLLSCAN"]
        bounds = str([scan.get("indexBounds") for scan in scans])
        assert '"Completed", "Completed"' not in bounds.replace("'", '"')
        # The plan explained is the plan of the queries the sweep sends, type filter included.
        assert ('"x", "x"' in bounds.replace("'", '"')) == bool(job_types)
