"""The lease documents' rules in memory, on clocks the test moves: a fake
at the seams of ``watcher.group.elector`` (``Leases``, ``Members``,
``Leadership``), so the lease state machine is tested without a database
and without waiting. ``tests/integration/test_leases.py`` holds
``MongoLeases`` to the same rules on a real server.

Two clocks, as in production: ``FakeServer.now`` is MongoDB's (it judges
expiry), each elector's ``clock`` is its own process's; a test can move them
apart (a paused process) or skew them (they are never compared).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from watcher.storage import errors
from watcher.storage.lease import Grant
from watcher.storage.members import Member
from watcher.storage.position import Token


@dataclass
class Lease:
    holder: str | None = None
    term: int = 0
    expires_at: float = 0.0
    last_held_at: float | None = None
    token: Token | None = None
    token_term: int | None = None


@dataclass
class FakeServer:
    """MongoDB as the leases see it: one conditional update at a time, on its own clock."""

    now: float = 1000.0
    leases: dict[tuple[int, int], Lease] = field(default_factory=dict)
    beats: dict[str, tuple[dict[str, Any], float, float]] = field(default_factory=dict)
    #: Planned failures: operation name ("take", "renew", "release", "beat", "members", "save") -> errors to raise.
    failures: dict[str, list[BaseException]] = field(default_factory=dict)
    #: Operations that apply and then lose their reply (the client sees a failure).
    lost_replies: set[str] = field(default_factory=set)

    def fail(self, operation: str, error: BaseException | None = None, times: int = 1) -> None:
        self.failures.setdefault(operation, []).extend(
            [error or errors.StoreUnavailable(f"{operation}: AutoReconnect", error="AutoReconnect")] * times
        )

    def check(self, operation: str) -> None:
        planned = self.failures.get(operation)
        if planned:
            raise planned.pop(0)

    def reply(self, operation: str) -> None:
        if operation in self.lost_replies:
            raise errors.StoreUnavailable(f"{operation}: NetworkTimeout (applied, reply lost)", error="NetworkTimeout")

    def lease(self, partition: int, partitions: int = 1) -> Lease:
        return self.leases.setdefault((partitions, partition), Lease())


def _cut_off(cut: bool, operation: str) -> None:
    if cut:
        raise errors.StoreUnavailable(
            f"{operation}: ServerSelectionTimeoutError (cut off)", error="ServerSelectionTimeoutError"
        )


class FakeLeases:
    def __init__(
        self, server: FakeServer, holder: str, *, partitions: int, lease_s: float, watcher: str = "default"
    ) -> None:
        self.server = server
        #: This process cannot reach the server at all.
        self.cut = False
        self._holder = holder
        self._partitions = partitions
        self._lease_s = lease_s
        self._watcher = watcher

    async def take(self, partition: int) -> Grant | None:
        await anyio.lowlevel.checkpoint()
        _cut_off(self.cut, "take")
        self.server.check("take")
        now = self.server.now
        lease = self.server.lease(partition, self._partitions)
        if not (lease.holder is None or lease.holder == self._holder or lease.expires_at <= now):
            return None
        vacant = None if lease.last_held_at is None else now - lease.last_held_at
        previous = lease.holder
        lease.holder, lease.term, lease.expires_at, lease.last_held_at = (
            self._holder,
            lease.term + 1,
            now + self._lease_s,
            now,
        )
        self.server.reply("take")
        return Grant(
            self._watcher,
            partition,
            self._partitions,
            lease.term,
            self._holder,
            vacant_s=vacant,
            previous_holder=previous if previous != self._holder else None,
        )

    async def renew(self, grant: Grant) -> bool:
        await anyio.lowlevel.checkpoint()
        _cut_off(self.cut, "renew")
        self.server.check("renew")
        now = self.server.now
        lease = self.server.lease(grant.partition, grant.partitions)
        if lease.holder != grant.holder or lease.term != grant.term or lease.expires_at <= now:
            return False
        lease.expires_at, lease.last_held_at = now + self._lease_s, now
        self.server.reply("renew")
        return True

    async def release(self, grant: Grant) -> bool:
        await anyio.lowlevel.checkpoint()
        _cut_off(self.cut, "release")
        self.server.check("release")
        lease = self.server.lease(grant.partition, grant.partitions)
        if lease.holder != grant.holder or lease.term != grant.term:
            return False
        lease.holder, lease.expires_at, lease.last_held_at = None, self.server.now, self.server.now
        return True

    async def release_all(self) -> int:
        await anyio.lowlevel.checkpoint()
        _cut_off(self.cut, "release_all")
        freed = 0
        for lease in self.server.leases.values():
            if lease.holder == self._holder:
                lease.holder, lease.expires_at, lease.last_held_at = None, self.server.now, self.server.now
                freed += 1
        return freed

    async def save(self, grant: Grant, token: Token) -> None:
        """A position save fenced like ``MongoPositionStore``'s."""
        await anyio.lowlevel.checkpoint()
        _cut_off(self.cut, "save")
        self.server.check("save")
        lease = self.server.lease(grant.partition, grant.partitions)
        if lease.holder != grant.holder or lease.term != grant.term:
            raise errors.Deposed("position save matched nothing", partition=grant.partition, term=grant.term)
        lease.token, lease.token_term = token, grant.term


class FakeMembers:
    def __init__(self, server: FakeServer, instance: str, *, lease_s: float) -> None:
        self.server = server
        self.cut = False
        self._instance = instance
        self._lease_s = lease_s

    @property
    def instance(self) -> str:
        return self._instance

    async def beat(self, about: Mapping[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()
        _cut_off(self.cut, "beat")
        self.server.check("beat")
        started = self.server.beats.get(self._instance, ({}, 0.0, self.server.now))[2]
        self.server.beats[self._instance] = (dict(about), self.server.now, started)

    async def all(self) -> list[Member]:
        await anyio.lowlevel.checkpoint()
        _cut_off(self.cut, "members")
        self.server.check("members")
        now = self.server.now
        return [
            Member(
                instance,
                role=about.get("role"),
                partitions=about.get("partitions"),
                job_types=tuple(about.get("jobTypes", ())),
                held=tuple(about.get("held", ())),
                lease_s=self._lease_s,
                heartbeat_age_s=now - beat_at,
                started_age_s=now - started_at,
            )
            for instance, (about, beat_at, started_at) in self.server.beats.items()
        ]

    async def leave(self) -> None:
        _cut_off(self.cut, "leave")
        self.server.beats.pop(self._instance, None)

    async def prune(self) -> int:
        return 0


class FakeLeadership:
    """A partition's pipeline as the elector sees it: runs until asked to stop
    (then stops in order) or cancelled (lost); can be made to find itself deposed."""

    def __init__(self, grant: Grant) -> None:
        self.grant = grant
        self.started = anyio.Event()
        self.stop_requested = False
        self.finished_in_order = False
        self.cancelled = False
        self._stop = anyio.Event()
        self._deposed = anyio.Event()

    def request_stop(self) -> None:
        self.stop_requested = True
        self._stop.set()

    def find_deposed(self) -> None:
        self._deposed.set()

    async def run(self) -> None:
        self.started.set()
        try:
            async with anyio.create_task_group() as tg:

                async def deposed() -> None:
                    await self._deposed.wait()
                    raise errors.Deposed(
                        "position save matched nothing", partition=self.grant.partition, term=self.grant.term
                    )

                tg.start_soon(deposed)
                await self._stop.wait()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise errors.sole(group) from None
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished_in_order = True
