"""What each ``jobwatch`` command does (``main`` only parses and resolves settings): ``dispatch`` connects,
runs the command's module under signal handling, and closes; ``describe_failure`` turns what ended it into
an exit code and one line."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from pymongo import AsyncMongoClient

from watcher.cli import demo, exits, interrupts
from watcher.cli.commands import jobs, position, simulating, status, sweep
from watcher.cli.commands.output import Emit, Options
from watcher.ops import logs, runtime
from watcher.service import ConfigurationProblem, Unreachable, Watcher
from watcher.settings import Settings
from watcher.storage import errors, reachability
from watcher.storage.store import MongoJobStore

__all__ = ["describe_failure", "dispatch"]

Handler = Callable[[AsyncMongoClient[Any], Options, Settings, Emit], Awaitable[int]]
#: The commands whose answer depends on the jobs collection being there.
READS_JOBS = frozenset({"run", "sweep", "explain", "status", "jobs"})
#: How long closing the client may take (it tells the server to end the driver's sessions).
CLOSE_DEADLINE_S = 2.0


def dispatch(command: str, options: Options, settings: Settings, emit: Emit) -> int:
    """Run one command; raises what ``describe_failure`` turns into a message.
    A signal stops it (the service cleanly) and decides the exit code."""
    stopper = interrupts.Stopper()
    if command == "demo":
        return stopper.exit_code(int(anyio.run(_stoppable, stopper, demo.run, emit)))
    handlers: dict[str, Handler] = {
        "run": functools.partial(_run, stopper=stopper),
        "sweep": sweep.sweep,
        "explain": jobs.explain,
        "status": status.status,
        "jobs": jobs.list_jobs,
        "position show": position.show,
        "position reset": position.reset,
        "simulate": simulating.simulate,
    }
    connected = functools.partial(_connected, reads_jobs=command in READS_JOBS)
    code = anyio.run(_stoppable, stopper, connected, handlers[command], options, settings, emit)
    return stopper.exit_code(int(code))


async def _stoppable(stopper: interrupts.Stopper, command: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``command(*args)`` with SIGINT and SIGTERM heard from the loop's first
    step: the first one cancels it wherever it waits (or, inside
    ``stopper.gracefully``, stops the service cleanly)."""
    code = exits.INTERRUPTED
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(interrupts.watch, stopper)
        with anyio.CancelScope() as stopper.scope:
            try:
                code = await command(*args)
            except Exception as exc:  # raised below as it is, not wrapped in the task group's exception group
                failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return code


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """An exit code and a one-line message for an error that ended a command.

    A task group's wrapping says nothing to an operator: a group is described
    by what it holds (several consumers that lost the same server at once are
    one unreachable server), by its first bug if it holds one."""
    if isinstance(exc, BaseExceptionGroup):
        described = [describe_failure(inner) for inner in exc.exceptions]
        return next((d for d in described if d[0] == exits.FAILED), described[0])
    if isinstance(exc, ConfigurationProblem):
        return exits.USAGE, str(exc)
    if isinstance(exc, Unreachable):
        return exits.UNREACHABLE, str(exc)
    if isinstance(exc, errors.StoreUnavailable):
        return exits.UNREACHABLE, f"MongoDB could not be used: {exc}"
    if isinstance(exc, errors.StorageProblem) or type(exc).__module__.startswith(("pymongo.", "bson.")):
        # Past the storage boundary only by a path that does not translate: still the server's problem.
        return exits.UNREACHABLE, f"MongoDB could not be used: {errors.name(exc)}: {str(exc)[:300]}"
    return exits.FAILED, f"unexpected error (a bug; please report it): {type(exc).__name__}: {str(exc)[:300]}"


async def _connected(
    handler: Handler, options: Options, settings: Settings, emit: Emit, *, reads_jobs: bool = False
) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught, errors.translated("--uri / JOBWATCH_URI", "retry"):
            warnings.simplefilter("always")
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                settings.uri_value,
                serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
                appname="jobwatch",
                # What each server answered: an unreachable error names why.
                event_listeners=[reachability.Heartbeats()],
            )
    except ValueError as exc:  # the driver's word for a malformed host or port
        raise ConfigurationProblem(f"--uri / JOBWATCH_URI: {logs.redacted(str(exc))}") from None
    _say_uri_warnings(caught)  # e.g. an unknown URI option
    try:
        # A mongodb+srv:// URI is only parsed once the driver resolved it, at
        # the first command: its warnings come here.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                await reachability.check(client, settings)
                if reads_jobs:
                    await _warn_without_jobs(client, settings)
            finally:
                _say_uri_warnings(caught)
        return int(await handler(client, options, settings, emit))
    finally:
        # Closed even when a signal cancelled the command, and within a bound:
        # closing ends the driver's sessions on the server, and a server that
        # is gone would hold the exit for a whole server-selection timeout.
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_DEADLINE_S) as closing:
            await client.close()
        if closing.cancelled_caught:
            logs.event(
                "client_close_abandoned",
                "WARNING",
                "the server did not answer as the client closed; exiting anyway",
                deadline_s=CLOSE_DEADLINE_S,
            )


def _say_uri_warnings(caught: list[warnings.WarningMessage]) -> None:
    """The driver's warnings about the URI: each said once, in our words, redacted."""
    for warning in caught:
        logs.event("uri_warning", "WARNING", logs.redacted(str(warning.message)))


async def _warn_without_jobs(client: AsyncMongoClient[Any], settings: Settings) -> None:
    """A database without the jobs collection is most often a wrong --database:
    say so, rather than report no jobs and no watcher as if all were quiet."""
    if await MongoJobStore.from_settings(client[settings.database], settings).jobs_collection_exists() is False:
        logs.event(
            "jobs_collection_missing",
            "WARNING",
            f"database {settings.database!r} has no collection {settings.jobs_collection!r} (yet): "
            "check --database / JOBWATCH_DATABASE and --jobs-collection",
        )


async def _run(
    client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit, *, stopper: interrupts.Stopper
) -> int:
    if settings.observe:
        logs.event(
            "observe_mode",
            "WARNING",
            "observe mode: every decision is computed and logged, nothing is written to the jobs",
        )
    runtime.tune()  # a long-running process: the hot path's garbage collection (watcher.ops.runtime)
    watcher = Watcher(client, settings)
    with stopper.gracefully(watcher.request_stop):
        await watcher.run()
    return exits.OK
