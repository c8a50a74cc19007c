"""``jobwatch status``: every instance seen lately and every partition (lease, position, last heartbeat),
and the open jobs; ``--check`` exits 1 unless each partition has a live holder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pymongo import AsyncMongoClient

from watcher.cli import exits
from watcher.cli.commands import output
from watcher.cli.commands.output import Emit, Options
from watcher.ops import printable
from watcher.settings import Settings
from watcher.storage import survey
from watcher.storage.members import Member, number
from watcher.storage.store import MongoJobStore
from watcher.storage.survey import PartitionView

#: ``status`` lists the instances alive, and those gone within this long (older heartbeats are history).
RECENTLY_GONE_S = 300.0
#: An alive instance whose heartbeat is older than this many of its own renew intervals is shown as late.
LATE_BEATS = 2


def partition_count(members: list[Member], views: list[PartitionView], settings: Settings) -> int:
    """The partitions the running instances use (else the newest layout saved,
    else this command's own setting)."""
    counts = [m.partitions for m in members if m.partitions is not None and not m.observe]
    if counts:
        return max(set(counts), key=counts.count)
    heard = [v for v in views if v.heartbeat_age_s is not None]
    if heard:  # nobody runs: the partitioning that last reported
        return min(heard, key=lambda v: v.heartbeat_age_s or 0.0).partitions
    return settings.partitions


def _instance_document(member: Member, default_lease_s: float) -> dict[str, Any]:
    alive = member.alive(default_lease_s)
    age_s, renew_s = member.heartbeat_age_s, member.renew_s
    return {
        "instance": member.instance,
        "alive": alive,
        # Alive, but a heartbeat is overdue: it may be dying (its leases run out at its lease_s).
        "late": alive and age_s is not None and renew_s is not None and age_s > LATE_BEATS * renew_s,
        "role": member.role,
        "observe": member.observe,
        "held": list(member.held),
        "partitions": member.partitions,
        "heartbeat_age_s": member.heartbeat_age_s,
        "version": member.version,
        "host": member.host,
        "pid": member.pid,
        "lease_s": member.lease_s,
        "renew_s": member.renew_s,
    }


def _partition_document(partition: int, view: PartitionView | None) -> dict[str, Any]:
    """One partition: its lease and position, and (under ``heartbeat``, with
    its age) what its holder last reported: that part may be old news."""
    if view is None:
        return {
            "partition": partition,
            "id": None,
            "held": False,
            "holder": None,
            "term": None,
            "lease_expires_in_s": None,
            "position_saved": False,
            "position_age_s": None,
            "position_term": None,
            "heartbeat": None,
        }
    state = view.saved.state
    last_sweep = view.saved.last_sweep
    return {
        "partition": partition,
        "id": view.doc_id,
        "held": view.held,
        "holder": view.holder,
        "term": view.term,
        "lease_expires_in_s": view.expires_in_s,
        "position_saved": view.saved.token is not None,
        "position_age_s": view.position_age_s,
        "position_term": view.position_term,
        "heartbeat": None
        if view.heartbeat_age_s is None
        else {
            "age_s": view.heartbeat_age_s,
            "save_interval_s": view.saved.save_interval_s,
            "backlog": state.get("pendingJobs"),
            "streaming": state.get("streaming"),
            "degraded": state.get("degraded"),
            "last_event_s_before": number(state.get("lastEventAgoS")),
            "last_sweep_s_before": number(state.get("lastSweepAgoS")),
            "last_sweep": dict(last_sweep) if last_sweep else None,
        },
    }


def status_document(
    views: list[PartitionView], members: list[Member], open_jobs: list[dict[str, Any]], settings: Settings
) -> dict[str, Any]:
    """Every instance seen lately (alive, or gone within ``RECENTLY_GONE_S``)
    and every partition. ``alive``: each partition has a live holder (a lease
    that has not run out, judged on the server's clock); an instance is alive
    while its heartbeat is younger than ITS OWN lease (the caller's settings
    may differ from the watcher's)."""
    count = partition_count([m for m in members if m.alive(settings.lease_s)], views, settings)
    by_partition = {v.partition: v for v in views if v.partitions == count}
    partitions = [_partition_document(k, by_partition.get(k)) for k in range(count)]
    seen = [
        m
        for m in members
        if m.alive(settings.lease_s) or (m.heartbeat_age_s is not None and m.heartbeat_age_s < RECENTLY_GONE_S)
    ]
    instances = sorted(
        (_instance_document(m, settings.lease_s) for m in seen), key=lambda i: (not i["alive"], i["instance"])
    )
    return {
        "watcher": settings.watcher_name,
        "alive": all(p["held"] for p in partitions),
        "partition_count": count,
        "unheld": [p["partition"] for p in partitions if not p["held"]],
        "instances": instances,
        "partitions": partitions,
        "open_jobs": [
            {"status": g["_id"].get("status"), "jobType": g["_id"].get("jobType"), "count": g["count"]}
            for g in open_jobs
        ],
    }


def render_status(status: Mapping[str, Any]) -> str:
    unheld = status["unheld"]
    verdict = (
        "every partition has a live holder"
        if not unheld
        else f"NOT alive: no live holder for partition {', '.join(map(str, unheld))}"
    )
    alive = [i for i in status["instances"] if i["alive"]]
    lines = [
        f"watcher {printable.value(status['watcher'])}: "
        f"{output.count(status['partition_count'], 'partition')}; {verdict}",
        f"instances: {len(alive)} alive"
        + (f", {len(status['instances']) - len(alive)} gone" if len(alive) < len(status["instances"]) else ""),
    ]
    for i in status["instances"]:
        if i["alive"]:
            held = ",".join(map(str, i["held"])) or "-"
            late = f" (LATE: it beats every {i['renew_s']:g}s)" if i["late"] else ""
            role = printable.value(i["role"] or "?")
            lines.append(
                f"  {printable.value(i['instance'])}  {role:<8} holds {held:<6} "
                f"heartbeat {output.ago(i['heartbeat_age_s'])}{late}  version {printable.value(i['version'] or '?')}"
            )
        else:
            lines.append(
                f"  {printable.value(i['instance'])}  gone (last heartbeat {output.ago(i['heartbeat_age_s'])})"
            )
    for p in status["partitions"]:
        lines += _render_partition(p)
    total = sum(g["count"] for g in status["open_jobs"])
    lines.append(f"open jobs: {total}")
    # Statuses and job types come from the job documents: data, never markup or control characters.
    lines += [
        f"  {g['count']:>7}  {printable.value(g['status']):<12} {printable.value(g['jobType'])}"
        for g in status["open_jobs"]
    ]
    return "\n".join(lines)


def _render_partition(p: Mapping[str, Any]) -> list[str]:
    expires = p["lease_expires_in_s"]
    if p["held"]:
        lease = (
            f"held by {printable.value(p['holder'])}, term {p['term']}, lease runs out in {expires:.1f}s unless renewed"
        )
    elif p["holder"] is not None and expires is not None:
        holder = printable.value(p["holder"])
        lease = f"NO live holder: the lease of {holder} (term {p['term']}) ran out {-expires:.1f}s ago"
    else:
        lease = "NO holder" + (f" (released; last term {p['term']})" if p["term"] is not None else "")
    position = (
        f"saved {output.ago(p['position_age_s'])}"
        + (f" by term {p['position_term']}" if p["position_term"] is not None else "")
        if p["position_saved"]
        else "none saved"
    )
    lines = [f"partition {p['partition']}: {lease}", f"  position: {position}"]
    beat = p["heartbeat"]
    if beat is None:
        lines.append("  no heartbeat saved")
        return lines
    mode = (
        "degraded (sweeps only)"
        if beat["degraded"]
        else "streaming"
        if beat["streaming"]
        else "not streaming"
        if beat["streaming"] is not None
        else "unknown"
    )
    as_of = f"  as of its heartbeat {output.ago(beat['age_s'])}"
    lines.append(
        f"{as_of}: stream {mode}; backlog {output.or_unknown(beat['backlog'])} jobs; "
        f"last event {output.before(beat['last_event_s_before'])}; "
        f"last sweep {output.before(beat['last_sweep_s_before'])}"
    )
    ls = beat["last_sweep"]
    if ls:
        shown = printable.value
        lines.append(
            f"{as_of}: last sweep {shown(ls.get('scanned'))} scanned, "
            f"{shown(ls.get('jobs_completed'))} jobs completed, {shown(ls.get('skipped'))} skipped, "
            f"{shown(ls.get('duration_s'))}s"
        )
    return lines


async def status(client: AsyncMongoClient[Any], options: Options, settings: Settings, emit: Emit) -> int:
    positions = client[settings.database][settings.positions_collection]
    views = await survey.partitions(positions, settings.watcher_name)
    members = await survey.instances(positions, settings.watcher_name)
    open_jobs = await MongoJobStore.from_settings(client[settings.database], settings).count_open()
    status = status_document(views, members, open_jobs, settings)
    emit(json.dumps(status, default=str) if options["as_json"] else render_status(status))
    return exits.FAILED if options["check"] and not status["alive"] else exits.OK
