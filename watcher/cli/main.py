"""The ``jobwatch`` command. ``main(argv)`` returns an exit code, so tests call
it in-process; the console script calls ``sys.exit(main())``.

Exit codes: 0 done; 1 the work failed (a job did not end as expected, the
service stopped on an error); 2 usage or configuration error; 3 MongoDB
unreachable; 4 job not found.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from watcher.ops import logs
from watcher.ops import redact
from watcher.settings import Settings

from watcher.cli import exits

DESCRIPTION = """\
jobwatch turns MongoDB background-job counters into job status at once: it
watches background_jobs through a change stream, completes stages and jobs
whose counters say the work is done (one conditional atomic update each), and
sweeps now and then for anything the stream could not see.

Every setting is a flag here and an environment variable (JOBWATCH_<NAME>);
flags win over the environment, which wins over the defaults."""

EPILOG = """\
examples:
  jobwatch demo                                   the seed incident on the embedded engine, no server
  jobwatch embedded-server --port 27017           a MongoDB-like server with change streams, no MongoDB
  jobwatch run --uri mongodb://db:27017/?replicaSet=rs0
  jobwatch sweep --dry-run                        what a sweep would fix now, job by job
  jobwatch explain 68ebf7fb500d92ef82221ec2       why a job is (not) complete, rule by rule
  jobwatch status --json
  jobwatch simulate --jobs 20 --items 132 --rate 500

exit codes: 0 ok, 1 failed, 2 usage/configuration, 3 MongoDB unreachable, 4 job not found"""


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also JOBWATCH_<NAME> in the environment)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.default
        shown = "***" if name == "uri" else default
        help_text = f"{field.description} (default: {shown}; env JOBWATCH_{name.upper()})"
        if field.annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif name == "job_types":
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar="T1,T2", help=help_text)
        elif name == "stage_arrays":
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar="JSON", help=help_text, type=_json_object)
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.split("_")[-1].upper(), help=help_text)


def _json_object(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object such as {"thumbnail": "thumbnails"}')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobwatch", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    settings_parent = argparse.ArgumentParser(add_help=False)
    _settings_flags(settings_parent)

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=description, parents=[settings_parent], formatter_class=argparse.RawDescriptionHelpFormatter
        )

    command("run", "the service: change stream + sweeps + health/metrics endpoint", "Run the watcher until SIGTERM or SIGINT (a second signal forces exit). On stop it drains, saves its position and closes.")
    sweep = command("sweep", "one reconciliation pass now; reports what it changed", "Evaluate every open job now and fix what the rules justify. This is how to unstick jobs today.")
    sweep.add_argument("--dry-run", action="store_true", help="evaluate and report, write nothing")
    sweep.add_argument("--job-type", action="append", default=[], metavar="T", help="only this job type (repeatable); default every type")
    sweep.add_argument("--json", action="store_true", help="print the report as JSON")
    explain = command("explain", "why a job is or is not complete, rule by rule", "Show a job's stages and every rule: whether it holds and why, and what the watcher would write.")
    explain.add_argument("job_id", metavar="JOB_ID", help="an ObjectId (24 hex digits) or a legacy string id")
    explain.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    status = command("status", "saved position, heartbeat, last sweep, open jobs", "Report what the watcher last saved and what is open now.")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    command("demo", "the seed incident end to end on the embedded engine (no server)", "Create the seed's stuck job and a live one on the embedded engine, run the watcher, show each flip to Completed.")
    server = commands.add_parser(  # no watcher settings: it is the database, not a client of one
        "embedded-server",
        help="a MongoDB-compatible server with change streams (no MongoDB needed)",
        description="Serve the embedded engine over the MongoDB wire protocol, change streams included, until SIGTERM or SIGINT. Prints its connection string as the first line of stdout.",
    )
    server.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: any free port)")
    server.add_argument("--data", default=None, metavar="DIR", help="keep data and change history in DIR across restarts (default: in memory)")
    simulate = command("simulate", "play consumers against a MongoDB (load generator)", "Create jobs like the image service does and $inc their stage counters from concurrent consumers.")
    simulate.add_argument("--jobs", type=int, default=10, help="jobs to create (default 10)")
    simulate.add_argument("--stages", default="thumbnail,cache", help="comma-separated stage names (default thumbnail,cache)")
    simulate.add_argument("--items", type=int, default=132, help="items per stage (default 132)")
    simulate.add_argument("--consumers", type=int, default=8, help="concurrent consumers (default 8)")
    simulate.add_argument("--rate", type=float, default=0.0, help="increments per second over all consumers; 0 = unthrottled")
    simulate.add_argument("--legacy-fraction", type=float, default=0.3, help="share of jobs with collectionId null (default 0.3)")
    simulate.add_argument("--lost-fraction", type=float, default=0.0, help="share of increments consumers 'forget' (path A repairs them)")
    simulate.add_argument("--job-type", default="resume-collection", help="jobType of created jobs")
    simulate.add_argument("--wait-s", type=float, default=0.0, help="then wait up to this long for the jobs to complete")
    simulate.add_argument("--repeat", action="store_true", help="keep creating batches until stopped (compose's simulator)")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    return Settings(**flags)


def describe_settings_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        where = f"--{name.replace('_', '-')} / JOBWATCH_{name.upper()}" if name in Settings.model_fields else name
        lines.append(f"  {where}: {redact.uri(str(error['msg']))}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] | None = None) -> int:
    emit = out or (lambda text: print(text, flush=True))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error or --help
        return int(exc.code or 0)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(describe_settings_error(exc), file=sys.stderr)
        return exits.USAGE
    logs.add_secret(settings.uri_value)
    for secret in redact.secrets_in(settings.uri_value):
        logs.add_secret(secret)
    level = settings.log_level
    if args.command in ("demo", "embedded-server") and "log_level" not in settings.model_fields_set:
        level = "WARNING"  # the demo tells its own story on stdout; --log-level INFO shows the events too
    logs.setup(json_lines=settings.log_json, level=level)
    from watcher.cli import commands  # after logging is set up: imports the driver

    try:
        return commands.dispatch(args, settings, emit)
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())
