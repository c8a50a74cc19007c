"""The CLI fuzzed: every subcommand's arguments and environment.

Whatever a user types (a URI of any shape, a bad id, bad JSON in a setting,
infinities, unknown JOBWATCH_ variables, names MongoDB rejects), jobwatch
answers with a short message and an exit code scripts can trust: 2 for a
usage or configuration error, 3 when the server is the problem. Never a
traceback, never exit 1's "unexpected error (a bug)", and never the
password planted in the URI, whatever the URI's shape.

Most examples run in-process through ``main(argv, out=...)`` (fast); a
handful run the real console script as subprocesses. The default run keeps
the example counts modest; ``-m reliability`` runs the big counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from loguru import logger

from tests.e2e.conftest import CliMongo
from watcher.cli import exits
from watcher.cli import main as cli
from watcher.ops import logs, redact

PASSWORD = "s3cr3t-PLANTED"
#: Nothing listens there: port 1 on loopback refuses at once.
UNREACHABLE = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100"
FAST = ["--server-selection-timeout-ms", "100"]
FUZZ = settings(
    max_examples=int(os.environ.get("JOBWATCH_CLI_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
BIG = settings(FUZZ, max_examples=1_000)
MAX_ERR_LINES = 6
#: The commands that talk to a server, with arguments that make them do so.
CONNECTING: list[list[str]] = [
    ["sweep", "--dry-run"],
    ["sweep"],
    ["explain", "68ebf7fb500d92ef82221ec2"],
    ["status"],
    ["status", "--check"],
    ["jobs", "--stuck"],
    ["position", "show"],
    ["position", "reset", "--yes"],
    ["simulate", "--jobs", "1"],
]


def _restore_logging() -> None:
    """The CLI's ``logs.setup`` points loguru at this test's captured stderr,
    which pytest closes afterwards: hand later tests a sink that looks up
    ``sys.stderr`` when it writes."""
    logger.remove()
    logger.add(lambda message: print(message, end="", file=sys.stderr), level="DEBUG")


@contextlib.contextmanager
def fresh_state(env: dict[str, str] | None = None) -> Iterator[None]:
    """Each example on its own: no JOBWATCH_ variable from the machine, and a
    redactor that knows no secret yet (a secret registered by an earlier
    example would hide a leak in this one)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("JOBWATCH_"):
                patch.delenv(name)
        # A refused connection is retried until server selection gives up: keep that short.
        patch.setenv("JOBWATCH_SERVER_SELECTION_TIMEOUT_MS", "100")
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        patch.setattr(logs, "_redactor", redact.Redactor())
        try:
            yield
        finally:
            _restore_logging()


def run_in_process(
    argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    capsys.readouterr()
    lines: list[str] = []
    with fresh_state(env):
        code = cli.main(argv, out=lines.append)
    captured = capsys.readouterr()
    return code, "\n".join(lines) + captured.out, captured.err


def assert_user_error(
    code: int, out: str, err: str, *, allowed: tuple[int, ...] = (exits.USAGE, exits.UNREACHABLE)
) -> None:
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "unexpected error" not in err, err
    assert code in allowed, (code, err)
    assert err.strip(), "an error must say what is wrong"
    assert len(err.strip().splitlines()) <= MAX_ERR_LINES and len(err) < 2_000, err
    assert PASSWORD not in out and PASSWORD not in err, err


# -- URIs ------------------------------------------------------------------------

schemes = st.sampled_from(
    ["mongodb://", "mongodb+srv://", "", "http://", "mongodb:/", "MONGODB://", "mongodb:", "://", "postgres://"]
)
passwords = st.sampled_from(
    [
        PASSWORD,
        f"{PASSWORD}@x",
        f"x@{PASSWORD}",
        f"{PASSWORD}/x",
        f"{PASSWORD}:x",
        f"a:{PASSWORD}",
        f"{PASSWORD}%40",
        f"{PASSWORD}?x",
        f"{PASSWORD} x",
        f"{PASSWORD}é",
    ]
)
users = st.sampled_from(["user", "", "us@er", "u:", "ü", "a/b"])
hosts = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1",
            "",
            "[::1]",
            "ho st",
            "例え.テスト",
            "host,",
            ",",
            "h1,h2",
            "/tmp/mongodb-27017.sock",
            "%2Ftmp%2Fx.sock",
            "a" * 300,
            "::1",
            "[",
            "-",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8),
)
ports = st.sampled_from(["", ":1", ":0", ":65536", ":-1", ":99999999999999999999", ":abc", ":", ":1:2", ":１"])
tails = st.sampled_from(
    [
        "",
        "/",
        "/db",
        "/?replicaSet=rs0",
        f"/?password={PASSWORD}",
        "/?serverSelectionTimeoutMS=abc",
        "/?unknownOption=1",
        "/db?authSource=",
        "?",
        "/%zz",
        "/a/b",
        "#frag",
    ]
)


@st.composite
def planted_uris(draw: st.DrawFn) -> str:
    """A connection string of any shape with the password somewhere in it."""
    userinfo = f"{draw(users)}:{draw(passwords)}@" if draw(st.booleans()) else f"{draw(passwords)}@"
    return draw(schemes) + userinfo + draw(hosts) + draw(ports) + draw(tails)


@FUZZ
@given(uri=planted_uris(), command=st.sampled_from(CONNECTING), via_env=st.booleans())
@example(uri=f"user:{PASSWORD}@127.0.0.1:1", command=["sweep"], via_env=False)  # no scheme
@example(uri=f"mongodb://user:{PASSWORD}@127.0.0.1:99999999999999999999/", command=["status"], via_env=True)
@example(uri=f"mongodb://us@er:{PASSWORD}@127.0.0.1:1/", command=["sweep"], via_env=False)  # unescaped @
@example(uri=f"mongodb://user:{PASSWORD}:x@127.0.0.1:1/", command=["explain", "x"], via_env=False)  # unescaped :
@example(uri=f"mongodb://user:{PASSWORD}@127.0.0.1:1/", command=["status"], via_env=False)  # unreachable: 3
@example(uri="", command=["sweep"], via_env=True)
@example(uri=f"mongodb://user:{PASSWORD} x@127.0.0.1", command=["status"], via_env=False)  # a space in the password
@example(uri=f"mongodb://user:{PASSWORD}@例え.テスト:1/", command=["sweep"], via_env=False)
@example(
    uri=f"mongodb+srv://{PASSWORD}?x@127.0.0.1/?replicaSet=rs0", command=["sweep", "--dry-run"], via_env=False
)  # warned at connect
def test_any_uri_is_a_short_error_and_never_leaks_the_password(
    uri: str, command: list[str], via_env: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*command, *FAST] + ([] if via_env else ["--uri", uri])
    env = {"JOBWATCH_URI": uri} if via_env else {}
    code, out, err = run_in_process(argv, capsys, env)
    assert_user_error(code, out, err)


def test_an_unreachable_server_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_in_process(["sweep", "--uri", f"mongodb://u:{PASSWORD}@127.0.0.1:1/", *FAST], capsys)
    assert_user_error(code, out, err, allowed=(exits.UNREACHABLE,))


def test_a_uri_file_of_any_shape_never_leaks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for text in (
        f"user:{PASSWORD}@host",
        f"mongodb://u:{PASSWORD}@127.0.0.1:1/",
        f"mongodb://u:{PASSWORD}@:1/",
        "\xff\xfe",
    ):
        path = tmp_path / "uri"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        code, out, err = run_in_process(["sweep", "--uri-file", str(path), *FAST], capsys)
        assert_user_error(code, out, err)


# -- settings from the environment and flags --------------------------------------

NUMERIC = [
    "sweep_interval_s",
    "full_sweep_every",
    "path_a_quiet_s",
    "sweep_batch_size",
    "workers",
    "max_pending_jobs",
    "progress_interval_s",
    "census_interval_s",
    "position_save_interval_s",
    "max_await_ms",
    "backoff_base_s",
    "max_backoff_s",
    "degraded_sweep_interval_s",
    "server_selection_timeout_ms",
    "shutdown_deadline_s",
    "health_port",
]
BAD_NUMBERS = [
    "inf",
    "-inf",
    "Infinity",
    "nan",
    "NaN",
    "-1",
    "-0.5",
    "1e400",
    "-1e400",
    "",
    " ",
    "ten",
    "0x10",
    "1_0_",
    "1.5.2",
    "½",
]
BAD_JSON = [
    "{",
    "[]",
    '"x"',
    "1",
    "null",
    '{"thumbnail": 1}',
    '{"a": {"b": "c"}}',
    "{'a': 'b'}",
    '{"a": "b",}',
    "NaN",
    '{"": ""}',
    '{"a": "$b"}',
    '{"a": ""}',
]


@FUZZ
@given(
    name=st.sampled_from(NUMERIC),
    value=st.sampled_from(BAD_NUMBERS),
    via_env=st.booleans(),
    command=st.sampled_from(CONNECTING[:3]),
)
def test_bad_numbers_are_configuration_errors(
    name: str, value: str, via_env: bool, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"JOBWATCH_URI": UNREACHABLE}
    argv = list(command)
    if via_env or name not in cli.COMMAND_SETTINGS[command[0]]:
        env[f"JOBWATCH_{name.upper()}"] = value
    else:
        argv += [f"--{name.replace('_', '-')}", value]
    code, out, err = run_in_process(argv, capsys, env)
    assert_user_error(code, out, err, allowed=(exits.USAGE,))
    assert name in err.lower().replace("-", "_"), err  # the message names the setting


def test_a_server_selection_timeout_the_driver_refuses_is_named_as_the_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_in_process(["status", "--uri", UNREACHABLE, "--server-selection-timeout-ms", "9" * 40], capsys)
    assert_user_error(code, out, err, allowed=(exits.USAGE,))
    assert "--server-selection-timeout-ms" in err and "--uri" not in err, err


@pytest.mark.parametrize(
    "name",
    [
        "sweep_interval_s",
        "max_backoff_s",
        "backoff_base_s",
        "shutdown_deadline_s",
        "path_a_quiet_s",
        "census_interval_s",
    ],
)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_durations_refuse_infinity_and_nan(name: str, value: str) -> None:
    """An infinite backoff or deadline would be a watcher waiting forever."""
    from pydantic import ValidationError

    from watcher.settings import Settings

    with fresh_state({f"JOBWATCH_{name.upper()}": value}), pytest.raises(ValidationError):
        Settings()


@FUZZ
@given(value=st.one_of(st.sampled_from(BAD_JSON), st.text(max_size=20)), via_env=st.booleans())
def test_bad_stage_arrays_json_is_a_configuration_error(
    value: str, via_env: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"JOBWATCH_URI": UNREACHABLE}
    argv = ["simulate", "--jobs", "1"]
    if via_env:
        if "\x00" in value:
            return  # an environment variable cannot hold NUL
        env["JOBWATCH_STAGE_ARRAYS"] = value
    else:
        argv += ["--stage-arrays", value]
    code, out, err = run_in_process(argv, capsys, env)
    try:
        parsed = json.loads(value)
        fine = isinstance(parsed, dict) and all(
            isinstance(v, str) and k and v and not v.startswith("$") and "\x00" not in v and "" not in v.split(".")
            for k, v in parsed.items()
        )
    except ValueError:
        fine = False
    assert_user_error(code, out, err, allowed=(exits.UNREACHABLE,) if fine else (exits.USAGE,))


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 10))  # each example waits for server selection
@given(
    names=st.lists(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789", min_size=1, max_size=20), min_size=1, max_size=4
    ),
    value=st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=10),
)
def test_unknown_jobwatch_variables_warn_and_change_nothing(
    names: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from watcher.settings import NOT_SETTINGS, Settings

    known = {f"JOBWATCH_{n.upper()}" for n in Settings.model_fields} | NOT_SETTINGS
    env = {f"JOBWATCH_{n}": value for n in names if f"JOBWATCH_{n}" not in known}
    env["JOBWATCH_URI"] = UNREACHABLE
    code, out, err = run_in_process(["status", *FAST], capsys, env)
    assert_user_error(code, out, err, allowed=(exits.UNREACHABLE,))
    for name in env:
        if name != "JOBWATCH_URI":
            assert f"{name} is not a jobwatch setting" in err


# -- names MongoDB rejects ------------------------------------------------------------

BAD_DATABASES = ["", "a/b", "a.b", "a$b", "a b", "a\\b", 'a"b', "x" * 64, "é" * 40, "a\x00b", "$", "."]
BAD_COLLECTIONS = ["", "a$b", "$cmd", "a\x00b", "system.jobs"]
COLLECTION_SETTINGS = ["jobs_collection", "collections_collection", "positions_collection"]


@FUZZ
@given(
    which=st.sampled_from(["database", *COLLECTION_SETTINGS]),
    data=st.data(),
    via_env=st.booleans(),
    command=st.sampled_from(CONNECTING),
)
def test_names_mongodb_rejects_are_configuration_errors(
    which: str, data: st.DataObject, via_env: bool, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = data.draw(st.sampled_from(BAD_DATABASES if which == "database" else BAD_COLLECTIONS))
    env = {"JOBWATCH_URI": UNREACHABLE}
    argv = [*command, *FAST]
    if via_env or which not in cli.COMMAND_SETTINGS[command[0]]:
        if "\x00" in bad:
            return  # an environment variable cannot hold NUL
        env[f"JOBWATCH_{which.upper()}"] = bad
    else:
        argv += [f"--{which.replace('_', '-')}", bad]
    code, out, err = run_in_process(argv, capsys, env)
    assert_user_error(code, out, err, allowed=(exits.USAGE,))
    assert which in err.lower().replace("-", "_"), err


# -- ids and arguments, against a real server -------------------------------------------

ids = st.one_of(
    st.sampled_from(
        [
            "¹",
            "١٣٢",
            "1" * 5000,
            "-",
            "",
            " ",
            "{}",
            '{"$gt": ""}',
            "$where",
            "68ebf7fb500d92ef82221ec",
            "68ebf7fb500d92ef82221ec2z",
            "ObjectId('x')",
            "-1",
            "1e400",
            "null",
            "\U0001f600",
            "a" * 5000,
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30),
)


@FUZZ
@given(job_id=ids, as_json=st.booleans())
def test_explain_any_id_is_not_found_not_a_crash(
    job_id: str, as_json: bool, cli_mongo: CliMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "explain",
        *(["--json"] if as_json else []),
        "--uri",
        cli_mongo.uri,
        "--database",
        cli_mongo.database,
        "--",
        job_id,
    ]
    code, out, err = run_in_process(argv, capsys)
    assert_user_error(code, out, err, allowed=(exits.FAILED, exits.USAGE))
    if code == exits.FAILED:
        assert "no job with _id" in err


ARG_WORDS = [
    "--dry-run",
    "--json",
    "--check",
    "--stuck",
    "--older-than",
    "--limit",
    "--jobs",
    "--items",
    "--rate",
    "--consumers",
    "--stages",
    "--legacy-fraction",
    "--wait-s",
    "--to-now",
    "--yes",
    "--job-type",
    "--workers",
    "--config",
    "-1",
    "0",
    "inf",
    "nan",
    "10x",
    "",
    "--",
    "-",
    "--no-observe",
    "--log-level",
    "TRACE",
    "x" * 100,
    "--port",
    "70000",
]
COMMANDS = [
    "run",
    "sweep",
    "explain",
    "status",
    "jobs",
    "position",
    "position show",
    "position reset",
    "demo",
    "simulate",
    "embedded-server",
    "nope",
    "",
]


@FUZZ
@given(command=st.sampled_from(COMMANDS), words=st.lists(st.sampled_from(ARG_WORDS), max_size=5))
def test_any_argument_soup_is_a_short_usage_error(
    command: str, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*command.split(" "), *words, "--uri", UNREACHABLE, *FAST] if command else words
    if command == "embedded-server" or command == "demo" or "--help" in words:
        argv = [*command.split(" "), *words]
    if command in ("run", "demo", "embedded-server") and not any(
        w in ("-1", "inf", "nan", "10x", "TRACE", "70000", "x" * 100, "--config", "nope") for w in words
    ):
        return  # these would run a service; their bad arguments are covered by the words above
    code, out, err = run_in_process(argv, capsys)
    assert "Traceback" not in err and "unexpected error" not in err, err
    assert code in (exits.OK, exits.FAILED, exits.USAGE, exits.UNREACHABLE), (code, err)
    if code != exits.OK and argv:  # no command at all: click shows the usage and the command list
        assert len(err.strip().splitlines()) <= 12 and len(err) < 3_000, err
    assert PASSWORD not in out + err


# -- the big run ------------------------------------------------------------------------


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.timeout(1800)
@BIG
@given(uri=planted_uris(), command=st.sampled_from(CONNECTING), via_env=st.booleans())
def test_a_thousand_uris(uri: str, command: list[str], via_env: bool, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*command, *FAST] + ([] if via_env else ["--uri", uri])
    code, out, err = run_in_process(argv, capsys, {"JOBWATCH_URI": uri} if via_env else {})
    assert_user_error(code, out, err)


# -- the real console script ------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "jobwatch"


def run_script(argv: list[str], env: dict[str, str], *, module: bool = False) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("JOBWATCH_")}
    command = [sys.executable, "-m", "watcher"] if module or not SCRIPT.exists() else [str(SCRIPT)]
    return subprocess.run(
        [*command, *argv], env={**base, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("argv", "env", "module", "expected"),
    [
        (["sweep", "--uri", f"user:{PASSWORD}@127.0.0.1:1", *FAST], {}, False, exits.USAGE),
        (["status", *FAST], {"JOBWATCH_URI": f"mongodb://us@er:{PASSWORD}@127.0.0.1:1/"}, True, exits.USAGE),
        (
            ["explain", "x", *FAST],
            {"JOBWATCH_URI": f"mongodb://u:{PASSWORD}@127.0.0.1:99999999999/"},
            False,
            exits.USAGE,
        ),
        (
            ["sweep", "--dry-run", *FAST],
            {"JOBWATCH_URI": UNREACHABLE, "JOBWATCH_STAGE_ARRAYS": "{not json"},
            True,
            exits.USAGE,
        ),
        (["sweep"], {"JOBWATCH_URI": UNREACHABLE, "JOBWATCH_MAX_BACKOFF_S": "inf"}, False, exits.USAGE),
        (["status", *FAST], {"JOBWATCH_URI": UNREACHABLE, "JOBWATCH_DATABASE": "a/b"}, True, exits.USAGE),
        (
            ["jobs", "--stuck", *FAST],
            {"JOBWATCH_URI": UNREACHABLE, "JOBWATCH_JOBS_COLLECTION": "a$b", "JOBWATCH_WROKERS": "4"},
            False,
            exits.USAGE,
        ),
        (
            ["status", *FAST],
            {"JOBWATCH_URI": f"mongodb://u:{PASSWORD}@127.0.0.1:1/", "JOBWATCH_NOPE": "1"},
            False,
            exits.UNREACHABLE,
        ),
    ],
    ids=[
        "no-scheme",
        "unescaped-at",
        "huge-port",
        "bad-json",
        "infinite-backoff",
        "db-with-slash",
        "collection-with-dollar",
        "unknown-variable",
    ],
)
def test_the_console_script(argv: list[str], env: dict[str, str], module: bool, expected: int) -> None:
    done = run_script(argv, env, module=module)
    assert_user_error(done.returncode, done.stdout, done.stderr, allowed=(expected,))
