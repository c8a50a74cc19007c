"""``jobwatch position show`` and ``position reset`` (refused while an instance runs, unless ``--force``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient

from watcher.cli import exits
from watcher.cli.commands import output, status
from watcher.cli.commands.output import Emit, Options
from watcher.service import ConfigurationProblem
from watcher.settings import Settings
from watcher.storage import errors, survey


async def show(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    views = await survey.partitions(client[settings.database][settings.positions_collection], settings.watcher_name)
    positions: list[dict[str, Any]] = [
        {
            "id": v.doc_id,
            "partition": v.partition,
            "partitions": v.partitions,
            "token": dict(v.saved.token) if v.saved.token else None,
            "saved_at": v.saved.saved_at,
            "position_age_s": v.position_age_s,
            "term": v.position_term,
            "heartbeat_at": v.saved.heartbeat_at,
            "save_interval_s": v.saved.save_interval_s,
        }
        for v in views
    ]
    if options["as_json"]:
        emit(output.extended_json({"watcher": settings.watcher_name, "positions": positions}))
        return exits.OK
    saved = [p for p in positions if p["token"] is not None]
    if not saved:
        emit(f"watcher {settings.watcher_name!r}: no position saved (the next start streams from then and sweeps)")
    for p in saved:
        where = f"partition {p['partition']} of {p['partitions']}" if p["partitions"] > 1 else "position"
        emit(
            f"watcher {settings.watcher_name!r} {where}: saved {output.ago(p['position_age_s'])} ({p['saved_at']})"
            + (f" by term {p['term']}" if p["term"] is not None else "")
            + f"\ntoken: {output.extended_json(p['token'])}"
        )
    return exits.OK


async def reset(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    where = f"{settings.database}.{settings.positions_collection}, watcher {settings.watcher_name!r}"
    if not options["yes"]:
        output.fail(
            f"this {'replaces' if options['to_now'] else 'forgets'} the saved positions of {where}; "
            "stop the watcher first, then add --yes"
        )
        return exits.USAGE
    positions = client[settings.database][settings.positions_collection]
    running = await running_now(positions, settings)
    if running and not options["force"]:
        output.fail(
            f"{running}: it would write its own position back at its next save. Stop every instance first, "
            "or add --force to reset anyway"
        )
        return exits.USAGE
    if options["to_now"]:
        token = await current_token(client, settings)
        members = [m for m in await survey.instances(positions, settings.watcher_name) if m.alive(settings.lease_s)]
        count = status.partition_count(members, await survey.partitions(positions, settings.watcher_name), settings)
        await survey.set_positions(positions, settings.watcher_name, count, token)
        emit(
            f"positions of {where} ({output.count(count, 'partition')}) set to now: {output.extended_json(dict(token))}"
        )
    else:
        await survey.forget_positions(positions, settings.watcher_name)
        emit(f"positions of {where} forgotten: the next start streams from then, and its start-up sweep covers the gap")
    return exits.OK


async def running_now(positions: Any, settings: Settings) -> str | None:
    """The instance (or lease holder) that shows this watcher name is running, said in one line; None if none does."""
    members = [
        m
        for m in await survey.instances(positions, settings.watcher_name)
        if m.alive(settings.lease_s) and not m.observe
    ]
    if members:
        m = min(members, key=lambda m: (m.role != "leader", m.heartbeat_age_s or 0.0))  # a leader first
        more = f" (and {len(members) - 1} more)" if len(members) > 1 else ""
        seen = f"{m.role}, heartbeat {output.ago(m.heartbeat_age_s)}"
        return f"instance {m.instance} of watcher {settings.watcher_name!r} is running ({seen}){more}"
    held = [v for v in await survey.partitions(positions, settings.watcher_name) if v.held]
    if held:
        v = held[0]
        name = settings.watcher_name
        return f"{v.holder} holds the lease of watcher {name!r} partition {v.partition} for {v.expires_in_s:.1f}s more"
    return None


async def current_token(client: AsyncMongoClient[Any], settings: Settings) -> Mapping[str, Any]:
    """The change stream's position now: its first (empty) batch's resume token."""
    with errors.translated("open a change stream for its current position", "retry"):
        async with await client[settings.database][settings.jobs_collection].watch(max_await_time_ms=100) as stream:
            await stream.try_next()
            token = stream.resume_token
    if token is None:
        raise ConfigurationProblem("the change stream gave no resume token; is this a replica set?")
    return token
