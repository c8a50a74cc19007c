"""The operator's commands: status, jobs --stuck, position, run --observe,
configuration sources, exit codes, and the console script on a pipe."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from tests.e2e.conftest import CliMongo
from tests.support.documents import seed_job
from watcher.cli import exits
from watcher.cli import main as cli
from watcher.service import Watcher
from watcher.settings import Settings

SCRIPT = Path(sys.executable).with_name("jobwatch")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    lines: list[str] = []
    code = cli.main(argv, out=lines.append)
    captured = capsys.readouterr()
    return code, "\n".join(lines) + captured.out, captured.err


def script(*argv: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as an operator runs it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBWATCH_")}
    return subprocess.run(
        [str(SCRIPT), *argv], capture_output=True, text=True, env={**base, **(env or {})}, timeout=60, input=stdin
    )


# -- the console script ----------------------------------------------------------


def test_version_and_help_per_command() -> None:
    done = script("--version")
    assert done.returncode == 0 and done.stdout.startswith("jobwatch ")
    run_help = script("run", "--help").stdout
    assert "--workers" in run_help and "JOBWATCH_WORKERS" in run_help and "default: 8" in run_help
    simulate_help = script("simulate", "--help").stdout
    assert "--workers" not in simulate_help and "--sweep-interval-s" not in simulate_help and "--rate" in simulate_help
    demo_help = script("demo", "--help").stdout
    assert "--uri" not in demo_help and "--log-level" in demo_help


def test_help_on_a_closed_pipe_is_quiet() -> None:
    done = subprocess.run(f"'{SCRIPT}' run --help | head -1", shell=True, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("Usage: jobwatch run")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_status_check_and_stuck_jobs_through_the_script(cli_mongo: CliMongo) -> None:
    cli_mongo.db.background_jobs.insert_one(seed_job())
    done = script(*cli_mongo.args("status", "--check"))
    assert done.returncode == exits.FAILED and "NOT alive" in done.stdout
    done = script(*cli_mongo.args("jobs", "--stuck"))
    assert done.returncode == exits.FAILED, done.stderr
    assert "68ebf7fb500d92ef82221ec2" in done.stdout and "counters say done" in done.stdout


# -- status -------------------------------------------------------------------------


def _instance(
    cli_mongo: CliMongo, *, lease_s: float, age_s: float, role: str = "leader", held: tuple[int, ...] = (0,)
) -> str:
    """An instance's heartbeat document, as a running jobwatch writes it."""
    now = dt.datetime.now(dt.UTC)
    instance = f"host-a:4242:{ObjectId()}"
    cli_mongo.db.jobwatch_positions.insert_one(
        {
            "_id": f"default@{instance}",
            "kind": "instance",
            "watcher": "default",
            "instance": instance,
            "host": "host-a",
            "pid": 4242,
            "version": "9.9.9",
            "role": role,
            "partitions": 1,
            "jobTypes": [],
            "held": list(held),
            "leaseS": lease_s,
            "renewS": lease_s / 5,
            "startedAt": now - dt.timedelta(seconds=age_s + 60),
            "heartbeatAt": now - dt.timedelta(seconds=age_s),
            "state": {"pendingJobs": 7},
        }
    )
    return instance


def _partition(cli_mongo: CliMongo, *, holder: str | None, expires_in_s: float, age_s: float) -> None:
    """Partition 0's lease and position, its holder's last report ``age_s`` old."""
    now = dt.datetime.now(dt.UTC)
    cli_mongo.db.jobwatch_positions.insert_one(
        {
            "_id": "default",
            "kind": "partition",
            "watcher": "default",
            "partition": 0,
            "partitions": 1,
            "holder": holder,
            "term": 3,
            "expiresAt": now + dt.timedelta(seconds=expires_in_s),
            "token": {"_data": "8263"},
            "tokenTerm": 3,
            "savedAt": now - dt.timedelta(seconds=age_s),
            "heartbeatAt": now - dt.timedelta(seconds=age_s),
            "saveIntervalS": 5,
            "state": {
                "pendingJobs": 7,
                "streaming": True,
                "degraded": False,
                "lastEventAgoS": 2.0,
                "lastSweepAgoS": 30.0,
            },
            "lastSweep": {"scanned": 4, "jobs_completed": 1, "skipped": 0, "duration_s": 0.01},
        }
    )


def test_status_judges_each_instance_by_its_own_lease(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    # A 30 s old heartbeat is fresh for an instance whose lease is 60 s, whatever the caller's settings say.
    instance = _instance(cli_mongo, lease_s=60, age_s=30)
    _partition(cli_mongo, holder=instance, expires_in_s=30, age_s=1)
    code, out, _ = run_cli(cli_mongo.args("status", "--check", "--json"), capsys)  # the caller: lease_s 10
    status = json.loads(out)
    assert code == exits.OK and status["alive"] is True and status["unheld"] == []
    [seen] = status["instances"]
    assert seen["alive"] is True and seen["instance"] == instance and seen["role"] == "leader" and seen["held"] == [0]
    assert seen["version"] == "9.9.9" and seen["host"] == "host-a" and seen["pid"] == 4242 and seen["observe"] is False
    assert seen["late"] is True  # alive (its lease is 60 s) but 30 s without a heartbeat where it beats every 12 s
    [partition] = status["partitions"]
    assert partition["holder"] == instance and partition["term"] == 3 and partition["position_term"] == 3
    assert partition["heartbeat"]["backlog"] == 7 and partition["heartbeat"]["streaming"] is True
    code, out, _ = run_cli(cli_mongo.args("status"), capsys)
    assert code == exits.OK and "every partition has a live holder" in out and "backlog 7 jobs" in out
    assert f"held by {instance}, term 3" in out and "(LATE: it beats every 12s)" in out


def test_status_on_a_dead_watcher_marks_everything_it_last_reported_with_its_age(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    instance = _instance(cli_mongo, lease_s=10, age_s=60)
    _partition(cli_mongo, holder=instance, expires_in_s=-50, age_s=60)
    code, out, _ = run_cli(cli_mongo.args("status", "--check"), capsys)
    assert code == exits.FAILED and "NOT alive: no live holder for partition 0" in out
    assert f"{instance}  gone (last heartbeat 1.0m ago)" in out and "ran out 50." in out
    reported = [line for line in out.splitlines() if "stream" in line or "backlog" in line or "last sweep" in line]
    assert reported and all("as of its heartbeat 1.0m ago" in line for line in reported), reported
    assert run_cli(cli_mongo.args("status"), capsys)[0] == exits.OK  # without --check: a report, not a verdict
    status = json.loads(run_cli(cli_mongo.args("status", "--json"), capsys)[1])
    assert status["instances"][0]["alive"] is False and 59 < status["instances"][0]["heartbeat_age_s"] < 120
    assert 59 < status["partitions"][0]["heartbeat"]["age_s"] < 120  # the report, with its age beside it


def test_status_and_position_read_a_position_document_of_any_shape(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    # Someone else's (or an older version's) document under our name: every field of the wrong type.
    cli_mongo.db.jobwatch_positions.insert_many(
        [
            {
                "_id": "default",
                "token": "8263",
                "savedAt": "yesterday",
                "heartbeatAt": 12,
                "saveIntervalS": "60",
                "holder": 7,
                "term": "three",
                "expiresAt": "soon",
                "partition": float("nan"),
                "lastSweep": "a string",
                "state": ["not", "a", "mapping"],
            },
            {"_id": "default@x", "kind": "instance", "watcher": "default", "instance": 5, "heartbeatAt": "now"},
            {
                "_id": "default@y",
                "kind": "instance",
                "watcher": "default",
                "instance": "y",
                "pid": float("inf"),
                "held": "all",
                "partitions": "3",
                "leaseS": -1,
                "heartbeatAt": dt.datetime.now(dt.UTC),
            },
        ]
    )
    for argv in (("status",), ("status", "--json"), ("position", "show"), ("position", "show", "--json")):
        code, out, err = run_cli(cli_mongo.args(*argv), capsys)
        assert code == exits.OK, (argv, err)
        assert "unexpected error" not in err
    code, out, _ = run_cli(cli_mongo.args("status", "--json"), capsys)
    status = json.loads(out)
    [partition] = status["partitions"]
    assert status["alive"] is False and partition["heartbeat"] is None and partition["position_saved"] is False


# -- jobs --stuck ---------------------------------------------------------------------


def test_stuck_jobs_with_why(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = cli_mongo.db.background_jobs
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    jobs.insert_many(
        [
            seed_job(),  # counters say done
            {
                "_id": "idle",
                "jobType": "collection-scan",
                "status": "InProgress",
                "createdAt": old,
                "stages": {"thumbnail": {"status": "InProgress", "completedItems": 3, "totalItems": 10}},
            },
            {
                "_id": ObjectId(),
                "jobType": "collection-scan",
                "status": "Pending",  # fresh: not stuck
                "stages": {"thumbnail": {"status": "InProgress", "completedItems": 3, "totalItems": 10}},
            },
            {"_id": "done", "status": "Completed", "stages": {}},
        ]
    )
    code, out, _ = run_cli(cli_mongo.args("jobs", "--stuck", "--older-than", "30m"), capsys)
    assert code == exits.FAILED
    lines = out.splitlines()
    assert lines[0].startswith("68ebf7fb500d92ef82221ec2") and "counters say done" in lines[0]
    assert lines[1].startswith("idle") and "idle 2.0h" in lines[1] and "rule" in lines[1]
    assert lines[-1] == "2 stuck jobs"
    code, out, _ = run_cli(cli_mongo.args("jobs", "--stuck", "--older-than", "3h", "--json"), capsys)
    report = json.loads(out)
    assert code == exits.FAILED and report["total"] == 1 and report["stuck"][0]["job_id"] == "68ebf7fb500d92ef82221ec2"


def test_no_stuck_jobs_exits_0(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(cli_mongo.args("jobs", "--stuck"), capsys)
    assert code == exits.OK and out.strip() == "no stuck jobs"
    assert run_cli(cli_mongo.args("jobs", "--stuck", "--older-than", "soon"), capsys)[0] == exits.USAGE


def test_jobs_lists_open_jobs_and_stuck_is_a_filter(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = cli_mongo.db.background_jobs
    jobs.insert_many(
        [
            seed_job(),  # counters say done: stuck
            {
                "_id": ObjectId(),
                "jobType": "collection-scan",
                "status": "Pending",  # fresh: open, not stuck
                "stages": {"thumbnail": {"status": "InProgress", "completedItems": 3, "totalItems": 10}},
            },
            {"_id": "done", "status": "Completed", "stages": {}},
        ]
    )
    code, out, _ = run_cli(cli_mongo.args("jobs"), capsys)
    lines = out.splitlines()
    assert code == exits.OK and lines[-1] == "2 open jobs" and len(lines) == 3
    assert "waiting for 7 more" in lines[1]  # each open job says where it stands
    code, out, _ = run_cli(cli_mongo.args("jobs", "--json"), capsys)
    assert code == exits.OK and json.loads(out)["total"] == 2
    code, out, _ = run_cli(cli_mongo.args("jobs", "--stuck"), capsys)
    assert code == exits.FAILED and out.splitlines()[-1] == "1 stuck job"  # one, not "1 stuck jobs"
    code, out, _ = run_cli(cli_mongo.args("jobs", "--older-than", "1h"), capsys)
    assert code == exits.OK and out.strip() == "no open jobs"


@pytest.mark.parametrize("bare", ["10", "0.5"])
def test_a_duration_without_a_unit_is_refused(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str], bare: str
) -> None:
    code, _, err = run_cli(cli_mongo.args("jobs", "--stuck", "--older-than", bare), capsys)
    assert code == exits.USAGE and "needs a unit" in err and f"{bare}m" in err


def test_explain_shows_the_id_as_its_header_does(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = ObjectId()
    cli_mongo.db.background_jobs.insert_one({**seed_job(), "_id": job_id})
    code, out, _ = run_cli(cli_mongo.args("explain", str(job_id)), capsys)
    assert code == exits.OK and "ObjectId(" not in out
    assert out.splitlines()[0].startswith(f"job {job_id} ") and f"job {job_id} (resume-collection)" in out


def _path_a_job(cli_mongo: CliMongo) -> Any:
    """A job whose collection holds one item more than its counter says."""
    collection_id = ObjectId()
    items = list(range(10))
    cli_mongo.db.collections.insert_one({"_id": collection_id, "thumbnails": items, "cacheImages": items})
    job = seed_job(_id=ObjectId(), collectionId=collection_id)
    job["stages"]["thumbnail"]["completedItems"] = 9
    job["stages"]["thumbnail"]["totalItems"] = job["stages"]["cache"]["totalItems"] = 10
    job["stages"]["cache"]["completedItems"] = 10
    cli_mongo.db.background_jobs.insert_one(job)
    return job["_id"]


def test_a_dry_run_never_waits_and_names_the_jobs_path_a_waits_for(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _path_a_job(cli_mongo)
    # An hour's quiet period: a dry run that waited would time the test out.
    code, out, err = run_cli(cli_mongo.args("sweep", "--dry-run", "--path-a-quiet-s", "3600"), capsys)
    assert code == exits.OK, err
    assert f"path A would wait for: job {job_id}: stages thumbnail" in out
    assert "1 waiting for path A" in out.splitlines()[-1]
    assert "waiting 3600s" not in err


def test_a_sweep_says_what_it_waits_for_and_how_long(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = _path_a_job(cli_mongo)
    code, out, err = run_cli(cli_mongo.args("sweep", "--path-a-quiet-s", "0.5"), capsys)
    assert code == exits.OK, err
    assert f"sweep: waiting 0.5s before the pass: 1 job ({job_id})" in err and "--path-a-quiet-s" in err
    assert "1 job completed" in out  # then raised the stood-still counter and completed the job
    assert cli_mongo.db.background_jobs.find_one({"_id": job_id})["status"] == "Completed"


def test_a_sweep_never_waits_for_a_count_that_can_raise_nothing(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    """A collection counted for a stage the job does not have, or holding no
    item, is no reason for path A's quiet period (an hour here)."""
    collection_id = ObjectId()
    cli_mongo.db.collections.insert_one({"_id": collection_id, "thumbnails": [1, 2], "cacheImages": []})
    job = seed_job(_id=ObjectId(), collectionId=collection_id)
    job["stages"] = {"thumbnail": {"status": "InProgress", "completedItems": 2, "totalItems": 2}}
    cli_mongo.db.background_jobs.insert_one(job)
    code, out, err = run_cli(cli_mongo.args("sweep", "--path-a-quiet-s", "3600"), capsys)
    assert code == exits.OK and "sweep: waiting" not in err, err
    assert "1 job completed" in out


@pytest.mark.parametrize("command", [["status"], ["jobs"], ["sweep", "--dry-run"]])
def test_a_database_without_the_jobs_collection_says_so(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code, _, err = run_cli(cli_mongo.args(*command), capsys)  # a fresh database: nothing in it
    assert code == exits.OK
    assert f"database '{cli_mongo.database}' has no collection 'background_jobs'" in err and "--database" in err
    cli_mongo.db.background_jobs.insert_one({"_id": "any", "status": "Completed"})
    _, _, err = run_cli(cli_mongo.args(*command), capsys)
    assert "has no collection" not in err


# -- position -------------------------------------------------------------------------


def test_position_show_and_reset(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    _partition(cli_mongo, holder=None, expires_in_s=-5, age_s=1)
    code, out, _ = run_cli(cli_mongo.args("position", "show", "--json"), capsys)
    assert code == exits.OK and json.loads(out)["positions"][0]["token"] == {"_data": "8263"}
    code, _, err = run_cli(cli_mongo.args("position", "reset"), capsys)
    assert code == exits.USAGE and "--yes" in err
    assert cli_mongo.db.jobwatch_positions.find_one()["token"] == {"_data": "8263"}
    code, out, _ = run_cli(cli_mongo.args("position", "reset", "--yes"), capsys)
    assert code == exits.OK and "forgotten" in out
    assert "token" not in cli_mongo.db.jobwatch_positions.find_one()
    code, out, _ = run_cli(cli_mongo.args("position", "show"), capsys)
    assert "no position saved" in out


def test_position_reset_refuses_while_an_instance_runs(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    instance = _instance(cli_mongo, lease_s=10, age_s=1, role="standby", held=())
    _partition(cli_mongo, holder=None, expires_in_s=-5, age_s=1)
    code, _, err = run_cli(cli_mongo.args("position", "reset", "--yes"), capsys)
    assert code == exits.USAGE
    assert f"instance {instance} of watcher 'default' is running (standby, heartbeat 1s ago)" in err
    assert "--force" in err and err.count("\n") == 1
    assert cli_mongo.db.jobwatch_positions.find_one({"_id": "default"})["token"] == {"_data": "8263"}
    code, out, _ = run_cli(cli_mongo.args("position", "reset", "--yes", "--force"), capsys)
    assert code == exits.OK and "forgotten" in out
    assert "token" not in cli_mongo.db.jobwatch_positions.find_one({"_id": "default"})


def test_position_reset_refuses_while_a_lease_is_held(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    # No heartbeat document (an instance that lost it, or an older version), but a lease that has not run out.
    _partition(cli_mongo, holder="host-b:1:abc", expires_in_s=30, age_s=1)
    code, _, err = run_cli(cli_mongo.args("position", "reset", "--yes"), capsys)
    assert code == exits.USAGE and "host-b:1:abc holds the lease of watcher 'default' partition 0" in err


# -- run --observe --------------------------------------------------------------------


def test_observe_decides_but_writes_nothing(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    from watcher.ops import logs

    cli_mongo.db.background_jobs.insert_one(seed_job())
    logs.setup(json_lines=True)
    settings = cli.settings_from_argv(cli_mongo.args("run", "--observe", "--create-index"))
    assert settings.observe

    async def sweep_once() -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.uri_value)
        try:
            watcher = Watcher(client, settings)
            return await watcher.sweep(), watcher.metrics.exposition().decode()
        finally:
            await client.close()

    report, exposition = anyio.run(sweep_once)
    assert report.jobs_completed == 1  # decided...
    assert cli_mongo.db.background_jobs.find_one()["status"] == "Pending"  # ...not written
    assert (
        'jobwatch_writes_total{kind="job",result="applied",source="sweep"} 1.0' in exposition
        or "jobwatch_writes_total" in exposition
    )
    observed = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"write_observed"' in line]
    logs.setup()
    update = json.loads(observed[0]["update"])  # the update as MongoDB's tools show it: Extended JSON
    assert update["$set"]["status"] == "Completed" and update["$currentDate"]["completedAt"] == {"$type": "date"}


# -- configuration -------------------------------------------------------------------


def test_precedence_flag_environment_file_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "jobwatch.toml"
    config.write_text('workers = 4\nsweep_interval_s = 60\ndatabase = "fromfile"\n')
    monkeypatch.setenv("JOBWATCH_CONFIG", str(config))
    monkeypatch.setenv("JOBWATCH_SWEEP_INTERVAL_S", "30")
    settings = cli.settings_from_argv(["run", "--workers", "2"])
    assert settings.workers == 2  # flag
    assert settings.sweep_interval_s == 30  # environment over file
    assert settings.database == "fromfile"  # file over default
    assert settings.max_await_ms == Settings.model_fields["max_await_ms"].default
    other = tmp_path / "other.toml"
    other.write_text("workers = 6\n")
    assert cli.settings_from_argv(["run", "--config", str(other)]).workers == 6  # --config over JOBWATCH_CONFIG


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("workers = 0\n", "--workers / JOBWATCH_WORKERS"),
        ("sweep_intervall_s = 5\n", "sweep_intervall_s"),
        ("workers = [", "not valid TOML"),
    ],
)
def test_bad_config_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "jobwatch.toml"
    config.write_text(content)
    code, _, err = run_cli(["run", "--config", str(config)], capsys)
    assert code == exits.USAGE and expected in err and "Traceback" not in err
    code, _, err = run_cli(["run", "--config", str(tmp_path / "missing.toml")], capsys)
    assert code == exits.USAGE and "cannot read" in err


def test_uri_from_a_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "uri"
    secret.write_text("mongodb://ops:filepassw0rd@db1/?replicaSet=rs0\n")
    settings = cli.settings_from_argv(["run", "--uri-file", str(secret)])
    assert settings.uri_value == "mongodb://ops:filepassw0rd@db1/?replicaSet=rs0"
    code, _, err = run_cli(["run", "--uri-file", str(secret), "--uri", "mongodb://h/"], capsys)
    assert code == exits.USAGE and "not both" in err
    code, _, err = run_cli(["run", "--uri-file", str(tmp_path / "nothing")], capsys)
    assert code == exits.USAGE and "--uri-file / JOBWATCH_URI_FILE: cannot read" in err
    secret.write_text("ops:filepassw0rd@db1\n")  # no scheme
    code, out, err = run_cli(["run", "--uri-file", str(secret)], capsys)
    assert code == exits.USAGE and "no scheme" in err and "filepassw0rd" not in out + err


def test_unknown_environment_variables_are_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBWATCH_SWEEP_INTERVAL", "60")
    monkeypatch.setenv("JOBWATCH_WORKERS", "0")  # so the command stops at configuration, before any server
    code, _, err = run_cli(["run"], capsys)
    assert code == exits.USAGE
    assert "JOBWATCH_SWEEP_INTERVAL is not a jobwatch setting (did you mean JOBWATCH_SWEEP_INTERVAL_S?)" in err


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://ops:hunter22pw@127.0.0.1:9/?replicaSet=rs0",
        "mongodb://ops:hunter@22pw@127.0.0.1:9/",  # unescaped @
        "mongodb://ops:hunter/22pw@127.0.0.1:9/",  # unescaped /
        "mongodb+srv://ops:hunter22pw@",  # no host
        "ops:hunter22pw@127.0.0.1:9",  # no scheme
        "http://ops:hunter22pw@127.0.0.1:9/",
        "mongodb://127.0.0.1:9/?authMechanism=PLAIN&password=hunter22pw",
        "mongodb://ops:hunter22pw@127.0.0.1:notaport/",
    ],
)
def test_a_planted_password_is_never_printed(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["status", "--uri", uri, "--server-selection-timeout-ms", "200"], capsys)
    assert code in (exits.USAGE, exits.UNREACHABLE), err
    assert "hunter" not in out + err and "22pw" not in out + err
    assert "Traceback" not in err


# -- the job census behind the stuck-job metrics --------------------------------------


def take_census(cli_mongo: CliMongo) -> Any:
    """One job census of the test's database, over a client of its own."""
    from watcher.storage import census

    settings = Settings(uri=cli_mongo.uri, database=cli_mongo.database)

    async def take() -> census.Census:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(cli_mongo.uri)
        try:
            return await census.take(client[settings.database], settings)
        finally:
            await client.close()

    return anyio.run(take)


def test_census_counts_open_done_but_open_and_oldest(cli_mongo: CliMongo) -> None:
    from watcher.ops.metrics import Metrics
    from watcher.storage import census

    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    cli_mongo.db.background_jobs.insert_many(
        [
            seed_job(),  # counters say done, status Pending
            {
                "_id": "odd",
                "status": "InProgress",
                "createdAt": old,
                "stages": {"a": {"completedItems": "many", "totalItems": 1}},
            },
            {"_id": "none", "stages": {}},  # no status: open, no stage: not done
            {"_id": "done", "status": "Completed", "stages": {"a": {"completedItems": 1, "totalItems": 1}}},
        ]
    )
    metrics = Metrics()
    result = take_census(cli_mongo)
    assert (result.open_jobs, result.done_but_open) == (3, 1)
    census.publish(result, metrics, dt.datetime.now(dt.UTC))
    sample = metrics.registry.get_sample_value
    assert sample("jobwatch_done_but_open_jobs", {"job_type": "resume-collection"}) == 1.0  # the seed job
    assert sample("jobwatch_open_jobs", {"job_type": "resume-collection"}) == 1.0
    assert sample("jobwatch_open_jobs", {"job_type": "(none)"}) == 2.0  # "odd" and "none" have no jobType
    assert sample("jobwatch_open_jobs", {"job_type": "other"}) == 0.0  # always there: the family is never empty
    age_s = sample("jobwatch_oldest_open_job_age_seconds", {})
    assert age_s is not None and 3 * 3600 - 60 < age_s < 3 * 3600 + 600


def test_census_labels_only_the_most_common_job_types(cli_mongo: CliMongo) -> None:
    """Job types come from documents: a label per type would let any writer
    make series without end. The most common types keep theirs, the rest are
    "other"; a type that drops out of the census loses its series."""
    from watcher.ops import metrics as metrics_module
    from watcher.storage import census

    kept = metrics_module.JOB_TYPE_LABELS
    jobs = [
        {"_id": f"{n}-{i}", "jobType": f"type-{n:02d}", "status": "Pending", "stages": {}}
        for n in range(kept + 5)
        for i in range(kept + 5 - n)
    ]  # type-00 the most common
    jobs.append({"_id": "long", "jobType": "x" * 10_000 + "\n<b>", "status": "Pending", "stages": {}})
    cli_mongo.db.background_jobs.insert_many(jobs)
    metrics = metrics_module.Metrics()
    census.publish(take_census(cli_mongo), metrics, dt.datetime.now(dt.UTC))
    families = {f.name: f for f in metrics.registry.collect()}
    labels = {s.labels["job_type"]: s.value for s in families["jobwatch_open_jobs"].samples}
    assert len(labels) == kept + 1 and labels["type-00"] == kept + 5
    assert labels["other"] == sum(range(1, 6)) + 1  # the five least common types and the long one
    assert all(len(label) <= 100 for label in labels)
    cli_mongo.db.background_jobs.delete_many({"jobType": "type-00"})
    census.publish(take_census(cli_mongo), metrics, dt.datetime.now(dt.UTC))
    assert metrics.registry.get_sample_value("jobwatch_open_jobs", {"job_type": "type-00"}) is None
    assert metrics.registry.get_sample_value("jobwatch_open_jobs", {"job_type": "type-10"}) == 5.0  # now among the kept


def test_census_survives_an_unreachable_server() -> None:
    from watcher.ops.metrics import Metrics
    from watcher.storage import census

    settings = Settings(uri="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100", census_interval_s=0.05)
    metrics = Metrics()

    def failures() -> float:
        text = metrics.exposition().decode()
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("jobwatch_errors_total{") and 'action="census"' in line
        )

    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.uri_value, serverSelectionTimeoutMS=100)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(census.run, client[settings.database], settings, metrics)
                with anyio.fail_after(30):
                    while failures() < 2:  # failed, waited, failed again: still running
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        finally:
            await client.close()

    anyio.run(scenario)


def test_run_on_a_busy_port_is_one_line_and_exit_2(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [*cli_mongo.args("run"), "--health-port", str(port)]
        code, _, err = run_cli(argv, capsys)
    assert code == exits.USAGE, err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err and "ExceptionGroup" not in err


def test_debug_shows_the_traceback_and_only_then(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["status", "--uri", "mongodb://127.0.0.1:9/", "--server-selection-timeout-ms", "100"]
    code, _, err = run_cli(argv, capsys)
    assert code == exits.UNREACHABLE and "Traceback" not in err and err.count("\n") == 1
    code, _, err = run_cli([*argv, "--debug"], capsys)
    assert code == exits.UNREACHABLE and "Traceback" in err


def test_position_reset_to_now(cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]) -> None:
    from pymongo import errors as pymongo_errors

    try:
        with cli_mongo.db.background_jobs.watch(max_await_time_ms=10) as stream:
            stream.try_next()
        streams = True
    except pymongo_errors.OperationFailure:  # the embedded engine's wire proxy has no $changeStream yet
        streams = False
    code, out, err = run_cli(cli_mongo.args("position", "reset", "--to-now", "--yes"), capsys)
    if streams:
        assert code == exits.OK and "set to now" in out
        assert cli_mongo.db.jobwatch_positions.find_one()["token"]
    else:
        assert code == exits.UNREACHABLE and err.count("\n") == 1 and "Traceback" not in err
        assert cli_mongo.db.jobwatch_positions.find_one() is None


def test_progress_redrawn_on_a_terminal_and_in_lines_on_a_pipe(
    cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pty

    from watcher.cli import progress

    quick = [str(SCRIPT), *cli_mongo.args("simulate", "--jobs", "1", "--items", "50", "--consumers", "4")]
    started = time.monotonic()
    on_pipe = subprocess.run(quick, capture_output=True, text=True, timeout=60)
    quick_s = time.monotonic() - started
    assert on_pipe.returncode == 0, on_pipe.stderr
    # A quick run stays quiet on a pipe. Quick means shorter than one progress
    # period: the first line is due only that long after the process made its
    # progress line, so a run that ended sooner wrote none, however loaded the
    # machine; a run a loaded machine made longer may have written progress
    # lines, and nothing else.
    if quick_s < progress.LINE_EVERY_S:
        assert on_pipe.stderr == ""
    lines = on_pipe.stderr.splitlines()
    assert all(re.fullmatch(r"simulate: (creating 1 job|\d+/100 increments)", line) for line in lines), lines
    assert "simulate: 1 job, 100 increments" in on_pipe.stdout  # and still says what it did
    # Paced to last a few progress periods: a log reading the pipe hears how far
    # it got. In-process, with a period of 0.5 s instead of 5 (stderr is captured:
    # not a terminal, as a pipe), so that the run lasts 2 s instead of 15.
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.5)
    items = int(4 * progress.LINE_EVERY_S * 4)
    paced = cli_mongo.args(
        "simulate", "--jobs", "1", "--stages", "a", "--items", str(items), "--consumers", "1", "--rate", "4"
    )
    assert cli.main(paced, out=lambda _: None) == exits.OK
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines and all(re.fullmatch(rf"simulate: \d+/{items} increments", line) for line in lines), lines
    assert "\r" not in err and "\x1b" not in err
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(quick, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=60)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert re.search(r"\r\x1b\[Ksimulate: (creating 1 job|\d+/100 increments)", b"".join(chunks).decode())
