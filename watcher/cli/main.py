"""The ``jobwatch`` command, on Click. ``main(argv)`` returns an exit code
(``watcher.cli.exits``), so tests call it in-process; the console script
calls ``sys.exit(main())``.

Every setting is a flag of the commands that use it, generated from the one
``Settings`` model, and an environment variable (JOBWATCH_<NAME>); a flag wins
over the environment, which wins over the config file, which wins over the
default. Flags are passed to ``Settings`` untouched, so pydantic is the one
place that validates a value, whichever way it came in.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from watcher import settings as settings_module
from watcher.cli import exits, interrupts, stderr
from watcher.ops import logs, metrics, redact
from watcher.settings import Settings

Emit = Callable[[str], None]

DESCRIPTION = """\
jobwatch turns MongoDB background-job counters into job status at once: it
watches background_jobs through a change stream, completes stages and jobs
whose counters say the work is done (one conditional atomic update each), and
sweeps now and then for anything the stream could not see.

Each setting is a flag of the commands that use it and an environment
variable (JOBWATCH_<NAME>); flag > environment > config file (--config or
JOBWATCH_CONFIG, TOML) > default.

\b
examples:
  jobwatch demo                          the seed incident on the embedded engine, no server
  jobwatch embedded-server --port 27017  a MongoDB-compatible server with change streams, no MongoDB
  jobwatch run --uri 'mongodb://db:27017/?replicaSet=rs0'
  jobwatch status --check                exit 1 when a partition has no live holder
  jobwatch jobs --stuck --older-than 10m open jobs that should be done, and why
  jobwatch sweep --dry-run               what a sweep would fix now, job by job
  jobwatch explain 68ebf7fb500d92ef82221ec2

\b
exit codes: 0 ok (and stopped by SIGTERM), 1 check failed or something to
            report, 2 usage/configuration, 3 cannot reach or use the server,
            130 interrupted (SIGINT)"""

CONNECTION = ("uri", "uri_file", "database", "server_selection_timeout_ms")
LOGGING = ("log_level", "log_json")
JOBS = ("jobs_collection", "collections_collection", "stage_arrays", "scan_stage")
POSITION = ("positions_collection", "watcher_name", "partitions")
#: The settings each command reads, so its --help lists only those. The
#: others still come from the environment, config file or defaults.
COMMAND_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "run": tuple(Settings.model_fields),
    "sweep": CONNECTION + JOBS + ("job_types", "sweep_batch_size", "path_a_quiet_s") + LOGGING,
    "explain": CONNECTION + JOBS + LOGGING,
    "status": CONNECTION + ("jobs_collection",) + POSITION + LOGGING,
    "jobs": CONNECTION + JOBS + ("job_types", "sweep_batch_size") + LOGGING,
    "position": CONNECTION + POSITION + LOGGING,
    "simulate": CONNECTION + ("jobs_collection", "collections_collection", "stage_arrays") + LOGGING,
    "demo": LOGGING,
}


@dataclass
class Invocation:
    """What a command callback hands back to ``main``: the command's own
    options and the settings flags given on the command line."""

    command: str
    options: dict[str, Any]
    flags: dict[str, Any]
    config: Path | None
    debug: bool


# -- settings as flags ------------------------------------------------------------


def _shown_default(name: str) -> str:
    if name == "uri":
        return "mongodb://localhost:27017/?replicaSet=rs0"  # the default holds no secret
    default = Settings.model_fields[name].default
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return ",".join(default) or "(every type)"
    if isinstance(default, dict):
        return json.dumps(default)
    return "(none)" if default is None else str(default)


def _json_object(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter('expected a JSON object such as {"thumbnail": "thumbnails"}')
    return parsed


def setting_option(name: str) -> click.Option:
    """One setting as a flag. Its value goes to ``Settings`` as typed: pydantic
    validates it (and names the setting when it is wrong)."""
    field = Settings.model_fields[name]
    flag = "--" + name.replace("_", "-")
    help_text = (
        f"{field.description}  [env: {settings_module.ENV_PREFIX}{name.upper()}; default: {_shown_default(name)}]"
    )
    if field.annotation is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text)
    if name == "stage_arrays":
        return click.Option([flag, name], metavar="JSON", callback=_json_object, help=help_text)
    metavar = {"uri": "URI", "uri_file": "PATH", "job_types": "T1,T2", "log_level": "LEVEL"}.get(
        name, name.split("_")[-1].upper()
    )
    return click.Option([flag, name], metavar=metavar, help=help_text)


COMMON = [
    click.Option(
        ["--config", "config"],
        type=click.Path(path_type=Path),
        default=None,
        metavar="FILE",
        help=f"TOML file of settings (keys as the flags, with underscores)  [env: {settings_module.CONFIG_ENV}]",
    ),
    click.Option(["--debug", "debug"], is_flag=True, default=False, help="show the traceback of any error"),
]


def _invocation(command: str, kwargs: dict[str, Any]) -> Invocation:
    names = set(COMMAND_SETTINGS[command.split(" ")[0]])
    flags = {k: v for k, v in kwargs.items() if k in names and v is not None}
    options = {k: v for k, v in kwargs.items() if k not in names and k not in ("config", "debug")}
    return Invocation(command, options, flags, kwargs.get("config"), bool(kwargs.get("debug")))


def _command(
    name: str, short: str, description: str, params: Sequence[click.Parameter], *, settings_of: str | None = None
) -> click.Command:
    settings_params = [setting_option(n) for n in COMMAND_SETTINGS[settings_of or name.split(" ")[0]]]
    return click.Command(
        name.split(" ")[-1],
        params=[*params, *settings_params, *COMMON],
        callback=lambda **kwargs: _invocation(name, kwargs),
        help=description,
        short_help=short,
        context_settings={"max_content_width": 100},
    )


# -- duration flags -----------------------------------------------------------------


UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> float | None:
    """``90s``, ``10m``, ``2h``, ``1d`` -> seconds (an option callback). A bare
    number is refused: ``--older-than 10`` could mean seconds or minutes."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text[-1:] not in UNITS_S:
        hint = f"; e.g. {text}m or {text}s" if _is_number(text) else " (e.g. 90s, 10m, 2h)"
        raise click.BadParameter(f"{value!r} needs a unit: s, m, h or d{hint}")
    try:
        seconds = float(text[:-1]) * UNITS_S[text[-1]]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 90s, 10m, 2h)") from None
    if not seconds >= 0:
        raise click.BadParameter("must be zero or more")
    return seconds


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- the command tree -----------------------------------------------------------------


def build() -> click.Group:
    """The ``jobwatch`` command group."""
    json_flag = click.Option(["--json", "as_json"], is_flag=True, help="print JSON instead of text")
    group = click.Group(
        "jobwatch",
        help=DESCRIPTION,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        params=[
            click.Option(
                ["--version"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_print_version,
                help="print jobwatch's version and exit",
            )
        ],
    )
    group.add_command(
        _command(
            "run",
            "the service: change stream + sweeps + /healthz, /readyz, /metrics",
            "Run the watcher until SIGTERM or SIGINT (a second signal forces exit). Any number of instances may run "
            "with one --watcher-name: each partition (--partitions, 1 by default) has one leader, by a lease in "
            "MongoDB; the others stand by and take over within --lease-s + --renew-s of a crash. On stop it drains, "
            "saves its positions, releases its leases and closes. With --observe it computes, logs and counts every "
            "decision but writes nothing to the jobs and takes no lease: for a first rollout beside the old poller.",
            [],
        )
    )
    group.add_command(
        _command(
            "sweep",
            "one reconciliation pass now; reports what it changed",
            "Evaluate every open job now and fix what the rules justify. Path A raises a stage's counter from its "
            "collection only once both stood still for --path-a-quiet-s: when a collection is ahead, the sweep waits "
            "that long before its pass and says so on stderr; --dry-run never waits and lists the jobs path A would "
            "wait for. Exit 1 when a job had to be skipped.",
            [
                click.Option(["--dry-run"], is_flag=True, help="evaluate and report, write nothing"),
                click.Option(
                    ["--job-type", "job_type"],
                    multiple=True,
                    metavar="T",
                    help="only this job type (repeatable); default every type",
                ),
                json_flag,
            ],
        )
    )
    group.add_command(
        _command(
            "explain",
            "why a job is or is not complete, rule by rule",
            "Show a job's stages and every rule: whether it holds and why, and the filter and update the watcher "
            "would send (--json: as MongoDB documents). Exit 1 when no job has that id.",
            [click.Argument(["job_id"], metavar="JOB_ID"), json_flag],
        )
    )
    group.add_command(
        _command(
            "status",
            "every instance and partition: who leads, who stands by, positions, open jobs",
            "List the instances seen (role, partitions held, heartbeat age judged against each one's own lease, "
            "version) and each partition (holder, term, lease expiry, position age, and what its holder last "
            "reported, marked with the age of that heartbeat); count open jobs. Ages are judged on the server's "
            "clock. --check: exit 1 when a partition has no live holder.",
            [
                click.Option(
                    ["--check"],
                    is_flag=True,
                    help="exit 1 when a partition has no live holder (for scripts and probes)",
                ),
                json_flag,
            ],
        )
    )
    group.add_command(
        _command(
            "jobs",
            "list open jobs, each with the rule that explains where it stands",
            "List open jobs, one line each: id, type, status, how long it has not moved (updatedAt, else "
            "createdAt, else the ObjectId's time) and the rule that explains it. --stuck keeps the jobs whose "
            "counters say done (the watcher should have completed them) or that have not moved for --older-than, "
            "and exits 1 when any is found.",
            [
                click.Option(
                    ["--stuck"],
                    is_flag=True,
                    help="only jobs that should be done or have not moved for --older-than; exit 1 when any",
                ),
                click.Option(
                    ["--older-than", "older_than_s"],
                    callback=duration_s,
                    default=None,
                    metavar="DURATION",
                    help="only jobs that have not moved for this long, with a unit: 90s, 10m, 2h, 1d  "
                    "[default: 10m with --stuck]",
                ),
                click.Option(
                    ["--limit"],
                    type=click.IntRange(min=1),
                    default=100,
                    show_default=True,
                    help="print at most this many",
                ),
                json_flag,
            ],
        )
    )
    position = click.Group(
        "position",
        help="Inspect or reset the watcher's saved resume positions.",
        short_help="show or reset the saved resume positions",
    )
    position.add_command(
        _command(
            "position show",
            "show the saved positions",
            "Show each partition's saved resume token, when it was saved and by which term.",
            [json_flag],
        )
    )
    position.add_command(
        _command(
            "position reset",
            "forget the saved positions (asks for --yes)",
            "Forget the saved positions: the next start streams from that moment and its start-up sweep covers "
            "what happened meanwhile. --to-now instead saves the stream's current position for each partition. "
            "Refused (exit 2) while an instance of the watcher name is running (a fresh heartbeat or a lease), "
            "which would write its own position back: stop them all first, or add --force.",
            [
                click.Option(
                    ["--to-now"], is_flag=True, help="save the change stream's current position instead of deleting it"
                ),
                click.Option(["--yes"], is_flag=True, help="really do it"),
                click.Option(["--force"], is_flag=True, help="even while an instance of the watcher name is running"),
            ],
        )
    )
    group.add_command(position)
    group.add_command(
        _command(
            "demo",
            "the seed incident end to end on the embedded engine (no server)",
            "Create the seed's stuck job and a live one on the embedded engine, run the watcher, "
            "show each flip to Completed.",
            [],
        )
    )
    group.add_command(
        _command(
            "simulate",
            "play consumers against a MongoDB (load generator)",
            "Create jobs like the image service does and $inc their stage counters from concurrent consumers. "
            "Exit 1 when --wait-s passes before every job completed.",
            [
                click.Option(
                    ["--jobs"], type=click.IntRange(min=0), default=10, show_default=True, help="jobs to create"
                ),
                click.Option(
                    ["--stages"], default="thumbnail,cache", show_default=True, help="comma-separated stage names"
                ),
                click.Option(
                    ["--items"], type=click.IntRange(min=1), default=132, show_default=True, help="items per stage"
                ),
                click.Option(
                    ["--consumers"],
                    type=click.IntRange(min=1),
                    default=8,
                    show_default=True,
                    help="concurrent consumers",
                ),
                click.Option(
                    ["--rate"],
                    type=click.FloatRange(min=0),
                    default=0.0,
                    show_default=True,
                    help="increments per second over all consumers; 0 = unthrottled",
                ),
                click.Option(
                    ["--legacy-fraction"],
                    type=click.FloatRange(0, 1),
                    default=0.3,
                    show_default=True,
                    help="share of jobs with collectionId null",
                ),
                click.Option(
                    ["--lost-fraction"],
                    type=click.FloatRange(0, 1),
                    default=0.0,
                    show_default=True,
                    help="share of increments consumers 'forget' (path A repairs them)",
                ),
                click.Option(
                    ["--job-type"], default="resume-collection", show_default=True, help="jobType of created jobs"
                ),
                click.Option(
                    ["--wait-s"],
                    type=click.FloatRange(min=0),
                    default=0.0,
                    show_default=True,
                    help="then wait up to this long for the jobs to complete",
                ),
                click.Option(
                    ["--repeat"], is_flag=True, help="keep creating batches until stopped (compose's simulator)"
                ),
            ],
        )
    )
    _add_embedded_server(group)
    return group


def _add_embedded_server(group: click.Group) -> None:
    """``jobwatch embedded-server [--port P] [--data DIR] [--history-events N]
    [--replica-set NAME]``: it is the database, not a client of one, so it
    takes no watcher settings."""
    from watcher.cli import embedded

    history_events, replica_set = embedded.defaults()
    group.add_command(
        click.Command(
            "embedded-server",
            callback=lambda **kwargs: Invocation("embedded-server", kwargs, {}, None, False),
            short_help="a MongoDB-compatible server with change streams, for trying jobwatch without MongoDB",
            help="Serve the embedded engine over the MongoDB wire protocol, change streams included, until SIGTERM "
            "or SIGINT. The first line of stdout is its connection string. Exit 1 when it cannot serve.",
            params=[
                click.Option(
                    ["--port"],
                    type=click.IntRange(0, 65535),
                    default=0,
                    show_default=True,
                    help="TCP port on 127.0.0.1; 0 picks a free one",
                ),
                click.Option(
                    ["--data"],
                    type=click.Path(file_okay=False, path_type=Path),
                    default=None,
                    metavar="DIR",
                    help="keep data and change history in DIR across restarts (default: in memory)",
                ),
                click.Option(
                    ["--history-events"],
                    type=click.IntRange(min=1),
                    default=history_events,
                    show_default=True,
                    metavar="N",
                    help="changes the server's history keeps at least: a change stream that falls "
                    "further behind gets 286 ChangeStreamHistoryLost (and the server logs it), as on MongoDB "
                    "when its oplog rolls over",
                ),
                click.Option(
                    ["--replica-set"],
                    default=replica_set,
                    show_default=True,
                    metavar="NAME",
                    help="the replica set the server presents itself as (its only member, the primary)",
                ),
            ],
            context_settings={"max_content_width": 100},
        )
    )


def _embedded_server(options: Mapping[str, Any], emit: Emit) -> int:
    from watcher.cli import embedded

    if not embedded.available():
        stderr.fail(embedded.INSTALL_HINT)
        return exits.USAGE
    from jobwatch_embedded import server

    logs.setup(level="WARNING")
    return server.main(
        int(options["port"]),
        options["data"],
        emit,
        history_events=int(options["history_events"]),
        replica_set=str(options["replica_set"]),
    )


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"jobwatch {metrics.version()}")
        ctx.exit(exits.OK)


# -- running ----------------------------------------------------------------------------


def describe_settings_error(exc: ValidationError) -> str:
    """One line per wrong setting, named as flag / variable; never the value."""
    lines = ["invalid configuration:"]
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if name in Settings.model_fields:
            where = f"--{name.replace('_', '-')} / {settings_module.ENV_PREFIX}{name.upper()}: "
        elif name:
            where = f"{name}: "  # e.g. a config-file key that is no setting
        else:
            where = ""
        lines.append(f"  {where}{logs.redacted(message)}")
    return "\n".join(lines)


def load_settings(invocation: Invocation) -> Settings:
    return settings_module.load(invocation.flags, config_file=invocation.config)


def settings_from_argv(argv: Sequence[str]) -> Settings:
    """The settings a command line resolves to (``settings_from_argv(["run", "--workers", "4"])``)."""
    invocation = build().main(list(argv), prog_name="jobwatch", standalone_mode=False)
    assert isinstance(invocation, Invocation)
    return load_settings(invocation)


def main(argv: Sequence[str] | None = None, *, out: Emit | None = None) -> int:
    """Run one ``jobwatch`` command line; returns its exit code. SIGINT and
    SIGTERM are obeyed throughout (``watcher.cli.interrupts``)."""
    with interrupts.handled():
        try:
            return _main(argv, out)
        except interrupts.Interrupted as exc:  # outside the event loop: parsing, settings, imports
            logs.setup_once()
            interrupts.log_interrupted(exc.signum)
            return interrupts.exit_code(exc.signum)


def _main(argv: Sequence[str] | None, out: Emit | None) -> int:
    emit = out or (lambda text: print(text, flush=True))
    try:
        invocation = build().main(
            list(sys.argv[1:] if argv is None else argv), prog_name="jobwatch", standalone_mode=False
        )
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        hint = _dash_hint(exc)
        if hint:
            stderr.fail(hint)
        return exits.USAGE
    except click.Abort:
        return exits.INTERRUPTED
    if not isinstance(invocation, Invocation):  # a group's --help printed; nothing to run
        return exits.OK
    return _run(invocation, emit)


def _dash_hint(exc: click.ClickException) -> str | None:
    """A job id may begin with '-' (ids are written by other programs); Click
    then reads it as an unknown option. Say how to pass it as a value."""
    if not isinstance(exc, click.NoSuchOption) or exc.ctx is None:
        return None
    command = exc.ctx.command
    arguments = [param.human_readable_name for param in command.params if isinstance(param, click.Argument)]
    if not arguments:
        return None
    usage = f"jobwatch {command.name} [OPTIONS] -- {' '.join(arguments)}"
    return f"hint: a value that begins with '-' goes after '--', options before it: {usage}"


def _run(invocation: Invocation, emit: Emit) -> int:
    if invocation.command == "embedded-server":
        return _embedded_server(invocation.options, emit)
    for secret in redact.secrets_in(str(invocation.flags.get("uri") or "")):
        logs.add_secret(secret)  # before anything could print it, even a validation error
    for line in settings_module.unknown_environment():  # first: a typo may explain the error below
        stderr.fail(f"warning: {line}")
    try:
        settings = load_settings(invocation)
    except ValidationError as exc:
        print(describe_settings_error(exc), file=sys.stderr, flush=True)
        return exits.USAGE
    except settings_module.ConfigFileError as exc:
        stderr.fail(str(exc))
        return exits.USAGE
    except SettingsError as exc:  # a value pydantic-settings could not even decode (never echoed: it may be the URI)
        stderr.fail(f"invalid configuration: {str(exc).split(' from source')[0]}")
        return exits.USAGE
    for secret in redact.secrets_in(settings.uri_value):  # from the environment, config or secret file too
        logs.add_secret(secret)
    level = settings.log_level
    if invocation.command == "demo" and "log_level" not in settings.model_fields_set:
        level = "WARNING"  # the demo tells its own story on stdout; --log-level INFO shows the events too
    logs.setup(json_lines=settings.log_json, level=level)
    try:
        from watcher.cli import commands  # after logging is set up: imports the driver

        return commands.dispatch(invocation.command, invocation.options, settings, emit)
    except KeyboardInterrupt:  # off the main thread, where jobwatch's handlers cannot be installed
        return exits.INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        if invocation.debug:
            traceback.print_exc()
        from watcher.cli import commands

        code, message = commands.describe_failure(exc)
        hint = " (--debug shows the traceback)" if code == exits.FAILED and not invocation.debug else ""
        stderr.fail(message + hint)
        return code


def _quiet_stdout() -> None:
    """The reader went away (``jobwatch ... | head``): drop the rest of the
    output instead of failing on it again at interpreter exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        code = exits.OK
    sys.exit(code)
