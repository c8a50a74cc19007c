"""The CLI in-process: main(argv) returns the exit code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import CliMongo
from tests.support.documents import seed_job
from watcher.cli import exits
from watcher.cli import main as cli


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    lines: list[str] = []
    code = cli.main(argv, out=lines.append)
    captured = capsys.readouterr()
    return code, "\n".join(lines), captured.err


def test_explain_the_seed_job(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    cli_mongo.db.background_jobs.insert_one(seed_job())
    code, out, _ = run_cli(cli_mongo.args("explain", "68ebf7fb500d92ef82221ec2"), capsys)
    assert code == exits.OK
    assert "stage thumbnail" in out and "InProgress" in out
    assert "rule 1" in out and "rule 2" in out and "the job completes now" in out
    # explain never writes
    assert cli_mongo.db.background_jobs.find_one()["status"] == "Pending"


def test_explain_json_and_object_ids(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    from bson import ObjectId

    job_id = ObjectId()
    cli_mongo.db.background_jobs.insert_one({**seed_job(), "_id": job_id, "status": "Completed"})
    code, out, _ = run_cli(cli_mongo.args("explain", str(job_id), "--json"), capsys)
    assert code == exits.OK
    doc = json.loads(out)
    assert doc["outcome"] == "terminal" and doc["update"] is None and doc["filter"] is None
    assert doc["job"]["_id"] == {"$oid": str(job_id)}
    assert any(f["rule"] == 5 for f in doc["findings"])


def test_explain_json_prints_the_mongodb_filter_and_update(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_mongo.db.background_jobs.insert_one(seed_job())
    code, out, _ = run_cli(cli_mongo.args("explain", "68ebf7fb500d92ef82221ec2", "--json"), capsys)
    assert code == exits.OK
    doc = json.loads(out)
    assert doc["filter"]["_id"] == {"$eq": "68ebf7fb500d92ef82221ec2"}  # the seed's legacy string id, compared as data
    assert doc["update"]["$set"]["status"] == "Completed"
    assert doc["update"]["$currentDate"]["completedAt"] == {"$type": "date"}
    assert "repr" not in out and "Raise(" not in out


def test_explain_unknown_job(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(cli_mongo.args("explain", "no-such-job"), capsys)
    assert code == exits.FAILED
    assert "no job with _id 'no-such-job'" in err


def test_a_job_id_beginning_with_a_dash_goes_after_double_dash(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_mongo.db.background_jobs.insert_one({**seed_job(), "_id": "-x"})
    code, _, err = run_cli(cli_mongo.args("explain", "-x"), capsys)
    assert code == exits.USAGE  # Click reads it as an option; the error says how to pass it
    assert "No such option '-x'" in err and "jobwatch explain [OPTIONS] -- JOB_ID" in err
    code, out, _ = run_cli([*cli_mongo.args("explain"), "--", "-x"], capsys)
    assert code == exits.OK and "the job completes now" in out


@pytest.mark.parametrize("collection_id", [{"album": 7}, [1, 2]], ids=["document", "array"])
def test_explain_and_jobs_read_a_collection_id_of_any_type(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str], collection_id: Any
) -> None:
    """A collectionId that is a document or an array is looked up as the sweep
    looks it up: its collection's count is shown, never a TypeError."""
    stage = {"status": "InProgress", "completedItems": 1, "totalItems": 3}
    cli_mongo.db.background_jobs.insert_one(
        {"_id": "j", "jobType": "t", "status": "Pending", "collectionId": collection_id, "stages": {"thumbnail": stage}}
    )
    if not isinstance(collection_id, list):  # an _id cannot be an array: no collection for that job
        cli_mongo.db.collections.insert_one({"_id": collection_id, "thumbnails": ["a", "b", "c"]})
    code, out, err = run_cli(cli_mongo.args("explain", "j"), capsys)
    assert code == exits.OK, err
    assert ("collection holds 3" in out) is not isinstance(collection_id, list)
    code, out, err = run_cli(cli_mongo.args("jobs"), capsys)
    assert code == exits.OK, err
    assert out.startswith("j  t  Pending")


def test_sweep_dry_run_writes_nothing_then_sweep_fixes(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = cli_mongo.db.background_jobs
    jobs.insert_one(seed_job())
    jobs.insert_one({"_id": "bad", "status": "Pending", "stages": {"a": {"completedItems": "many"}}})
    before = list(jobs.find().sort("_id"))
    code, out, _ = run_cli(cli_mongo.args("sweep", "--dry-run"), capsys)
    assert code == exits.FAILED  # a job was skipped: something to report
    assert "dry run" in out and "would change: job 68ebf7fb500d92ef82221ec2" in out
    assert "1 job would complete" in out and "job completed" not in out
    assert "skipped: job bad" in out
    assert list(jobs.find().sort("_id")) == before
    code, out, _ = run_cli(cli_mongo.args("sweep", "--json"), capsys)
    assert code == exits.FAILED
    report = json.loads(out)
    assert report["jobs_completed"] == 1 and report["skipped"][0]["job_id"] == "bad"
    assert jobs.find_one({"_id": "68ebf7fb500d92ef82221ec2"})["status"] == "Completed"


def test_sweep_job_type_filter(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    cli_mongo.db.background_jobs.insert_one(seed_job())
    code, out, _ = run_cli(cli_mongo.args("sweep", "--job-type", "collection-scan", "--json"), capsys)
    assert code == exits.OK and json.loads(out)["scanned"] == 0


def test_status_reports_open_jobs_and_last_sweep(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = cli_mongo.db.background_jobs
    jobs.insert_many([{"_id": i, "jobType": "collection-scan", "status": "Pending", "stages": {}} for i in range(3)])
    code, out, _ = run_cli(cli_mongo.args("status", "--json"), capsys)
    assert code == exits.OK
    status = json.loads(out)
    assert status["alive"] is False and status["unheld"] == [0] and status["partitions"][0]["position_saved"] is False
    assert status["open_jobs"] == [{"status": "Pending", "jobType": "collection-scan", "count": 3}]
    code, out, _ = run_cli(cli_mongo.args("status"), capsys)
    assert "NOT alive" in out and "open jobs: 3" in out


def test_simulate_creates_and_plays_jobs(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        cli_mongo.args("simulate", "--jobs", "4", "--items", "5", "--legacy-fraction", "0.5"), capsys
    )
    assert code == exits.OK and "4 jobs, 40 increments" in out
    for job in cli_mongo.db.background_jobs.find():
        assert [s["completedItems"] for s in job["stages"].values()] == [5, 5]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--workers", "0"], "--workers / JOBWATCH_WORKERS"),
        (["run", "--sweep-interval-s", "soon"], "--sweep-interval-s / JOBWATCH_SWEEP_INTERVAL_S"),
        (["sweep", "--uri", "http://admin:hunter22@db/"], "--uri / JOBWATCH_URI"),
        (["sweep", "--log-level", "LOUD"], "--log-level / JOBWATCH_LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_setting(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == exits.USAGE
    assert expected in err
    assert "hunter22" not in err


def test_environment_settings_and_flag_precedence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBWATCH_WORKERS", "-1")
    code, _, err = run_cli(["sweep"], capsys)
    assert code == exits.USAGE and "JOBWATCH_WORKERS" in err
    monkeypatch.setenv("JOBWATCH_WORKERS", "3")
    assert cli.settings_from_argv(["run", "--workers", "5"]).workers == 5
    assert cli.settings_from_argv(["run"]).workers == 3


def test_unreachable_server_fails_fast_and_keeps_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "status",
        "--uri",
        "mongodb://ops:s3cretpassw0rd@127.0.0.1:9/?replicaSet=rs0",
        "--server-selection-timeout-ms",
        "300",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == exits.UNREACHABLE
    assert "unreachable" in err and "300 ms" in err
    assert "s3cretpassw0rd" not in err + out
    assert "mongodb://***@127.0.0.1:9" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli([], capsys)[0] == exits.USAGE
    assert run_cli(["frobnicate"], capsys)[0] == exits.USAGE
    assert run_cli(["sweep", "--workers", "3"], capsys)[0] == exits.USAGE  # sweep has no workers
    assert run_cli(["--help"], capsys)[0] == exits.OK
