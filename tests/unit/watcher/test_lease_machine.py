"""The lease state machine, on fake clocks: the server's (expiry) and each
process's own (the renew deadline), moved by the test. No database, no
waiting: every round is ``Elector.step``, every deadline check
``Elector.enforce``.

The lease rules themselves (take when free, term + 1, renew only by the
holder of that term before expiry, fenced saves) are held to the same
behaviour on a real server by ``tests/integration/test_leases.py``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from tests.support.leases import FakeLeadership, FakeLeases, FakeMembers, FakeServer
from watcher.group.elector import Elector
from watcher.group.tenure import RENEW_DEADLINE_SHARE, Timing
from watcher.ops.metrics import Metrics
from watcher.storage import errors
from watcher.storage.lease import Grant

LEASE_S = 10.0
RENEW_S = 2.0


class Node:
    """One jobwatch instance: its elector, its own clock, the pipelines it ran."""

    def __init__(
        self,
        server: FakeServer,
        name: str,
        *,
        partitions: int = 1,
        job_types: tuple[str, ...] = (),
        observe: bool = False,
        seed: int = 1,
    ) -> None:
        self.server = server
        self.name = name
        self.clock = 5_000.0 + seed * 777.0  # each process's monotonic clock has its own origin
        self.leases = FakeLeases(server, name, partitions=partitions, lease_s=LEASE_S)
        self.members = FakeMembers(server, name, lease_s=LEASE_S)
        self.metrics = Metrics()
        self.runs: list[FakeLeadership] = []
        self.elector = Elector(
            self.leases,
            self.members,
            partitions=partitions,
            timing=Timing(LEASE_S, RENEW_S),
            lead=self._lead,
            about=lambda: {"partitions": partitions, "jobTypes": list(job_types)},
            metrics=self.metrics,
            job_types=job_types,
            observe=observe,
            clock=lambda: self.clock,
            rng=random.Random(seed),
        )

    def _lead(self, grant: Grant) -> FakeLeadership:
        run = FakeLeadership(grant)
        self.runs.append(run)
        return run

    @property
    def held(self) -> list[int]:
        return sorted(self.elector.leading())

    def cut_off(self, cut: bool = True) -> None:
        """No call of this process reaches MongoDB (a network partition)."""
        self.leases.cut = self.members.cut = cut

    def running(self, partition: int) -> FakeLeadership:
        return next(r for r in reversed(self.runs) if r.grant.partition == partition)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class Cluster:
    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self.server = FakeServer()
        self.tg = tg
        self._nodes = 0

    def node(self, name: str, *, partitions: int = 1, job_types: tuple[str, ...] = (), observe: bool = False) -> Node:
        self._nodes += 1
        return Node(self.server, name, partitions=partitions, job_types=job_types, observe=observe, seed=self._nodes)

    async def step(self, *nodes: Node) -> None:
        for node in nodes:
            await node.elector.step(self.tg)
        await settle()

    def advance(self, seconds: float, *nodes: Node, server: bool = True) -> None:
        """Time passes on the server and on ``nodes`` (a process left out is paused)."""
        if server:
            self.server.now += seconds
        for node in nodes:
            node.clock += seconds
            node.elector.enforce(node.clock)

    async def rounds(self, count: int, *nodes: Node) -> None:
        """``count`` rounds of every node, ``renew_s`` apart, time passing for all."""
        for _ in range(count):
            await self.step(*nodes)
            self.advance(RENEW_S, *nodes)
            await settle()


async def settle() -> None:
    """Until every task that was woken has run (no I/O here: only the event loop's own turns)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


@asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    async with anyio.create_task_group() as tg:
        yield Cluster(tg)
        tg.cancel_scope.cancel()


async def test_one_instance_takes_the_free_partition_in_its_first_round() -> None:
    async with cluster() as c:
        a = c.node("a")
        await c.step(a)
        assert a.held == [0] and a.elector.role == "leader"
        assert a.runs[0].started.is_set() and a.runs[0].grant.term == 1 and a.runs[0].grant.vacant_s is None
        assert a.metric("jobwatch_leader", partition="0") == 1 and a.metric("jobwatch_lease_term", partition="0") == 1
        assert (
            a.metric("jobwatch_partitions_held") == 1
            and a.metric("jobwatch_leadership_changes_total", change="acquired") == 1
        )


async def test_a_standby_stays_ready_and_takes_nothing_while_the_leader_renews() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        await c.rounds(30, a, b)  # a minute: many times the lease
        assert a.held == [0] and b.held == [] and b.runs == []
        assert b.elector.role == "standby" and b.elector.in_touch(b.clock)
        assert b.metric("jobwatch_leader", partition="0") == 0  # a standby shows the partition, at 0
        assert a.runs[0].grant.term == 1 and not a.runs[0].cancelled  # renewed all along: one term


async def test_a_holder_that_cannot_renew_stops_at_its_deadline_before_the_lease_can_run_out() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        await c.step(a, b)
        a.cut_off()  # a cannot reach MongoDB; b can
        deadline_s = LEASE_S * RENEW_DEADLINE_SHARE
        lost_at = None
        for tick in range(1, 200):
            c.advance(0.1, a, b)
            if lost_at is None and a.held == []:
                lost_at = tick * 0.1
                # a stopped by itself while the lease still runs on the server: nobody can take it yet.
                assert c.server.lease(0).expires_at > c.server.now
                await c.step(b)
                assert b.held == []
            if tick % int(RENEW_S / 0.1) == 0:
                await c.step(a, b)
        await settle()
        assert lost_at is not None and deadline_s - 0.2 <= lost_at <= deadline_s + 0.2
        assert a.runs[0].cancelled and not a.runs[0].finished_in_order  # cancelled: nothing saved
        assert (
            a.metric("jobwatch_leadership_changes_total", change="lost") == 1
            and a.metric("jobwatch_leader", partition="0") == 0
        )
        # Once the lease ran out on the server, the standby took it, in the next term.
        assert b.held == [0] and b.runs[0].grant.term == 2 and b.runs[0].grant.previous_holder == "a"


async def test_a_crashed_holder_is_replaced_within_a_lease_and_a_renew_interval() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        await c.rounds(3, a, b)
        crashed_at = c.server.now
        while b.held == []:  # a is gone: no more rounds, no renewals
            await c.step(b)
            c.advance(RENEW_S, b)
        took_over_s = c.server.now - crashed_at
        assert LEASE_S - RENEW_S <= took_over_s <= LEASE_S + RENEW_S
        grant = b.runs[0].grant
        assert (
            grant.term == 2 and grant.vacant_s is not None and LEASE_S - RENEW_S <= grant.vacant_s <= LEASE_S + RENEW_S
        )


async def test_a_clean_stop_saves_then_releases_and_the_standby_takes_over_at_its_next_round() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        await c.rounds(2, a, b)
        a.elector.request_stop()
        await a.elector.step_down()
        assert a.runs[0].stop_requested and a.runs[0].finished_in_order  # stopped in order: drained, saved
        assert c.server.lease(0).holder is None  # then released
        assert a.metric("jobwatch_leadership_changes_total", change="released") == 1
        await c.step(b)  # no waiting for an expiry
        assert b.held == [0] and b.runs[0].grant.term == 2  # one more than a's


async def test_a_paused_holder_is_fenced_when_it_wakes() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        await c.step(a, b)
        grant_a = a.runs[0].grant
        # SIGSTOP: a's clock and loop stand still while the server's and b's go on, past the lease.
        for _ in range(int(LEASE_S / RENEW_S) + 2):
            c.advance(RENEW_S, b)
            await c.step(b)
        assert b.held == [0] and b.runs[0].grant.term == 2
        # SIGCONT: whatever a's pipeline still tries to save matches nothing...
        with pytest.raises(errors.Deposed):
            await a.leases.save(grant_a, {"_data": "stale"})
        await b.leases.save(b.runs[0].grant, {"_data": "new"})
        # ...and its first look at the clock (or its next renewal) stops it.
        c.advance(0.0, a, server=False)
        await c.step(a)
        assert a.held == [] and a.runs[0].cancelled
        assert a.metric("jobwatch_leadership_changes_total", change="lost") == 1
        assert c.server.lease(0).token == {"_data": "new"} and c.server.lease(0).token_term == 2  # b's position intact


async def test_a_deposed_pipeline_is_lost_at_once() -> None:
    async with cluster() as c:
        a = c.node("a")
        await c.step(a)
        a.runs[0].find_deposed()  # a fenced save matched nothing
        await settle()
        assert a.held == [] and a.metric("jobwatch_leadership_changes_total", change="lost") == 1
        await c.step(a)  # standby again, and free to take it anew: a new term
        assert a.held == [0] and a.runs[1].grant.term == 2


async def test_two_instances_racing_for_a_free_lease_get_one_holder() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        grants = []
        async with anyio.create_task_group() as race:

            async def take(node: Node) -> None:
                grants.append(await node.leases.take(0))

            race.start_soon(take, a)
            race.start_soon(take, b)
        assert sorted(g is None for g in grants) == [False, True]


async def test_a_take_whose_reply_was_lost_is_taken_again_in_a_new_term() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        c.server.lost_replies.add("take")
        await c.step(a)  # applied on the server, a failure for a
        c.server.lost_replies.clear()
        assert a.held == [] and c.server.lease(0).holder == "a"
        await c.step(b)
        assert b.held == []  # held (by a, unknowingly): b cannot take it
        await c.step(a)
        assert a.held == [0] and a.runs[0].grant.term == 2


async def test_a_failed_renewal_is_retried_before_the_deadline_and_keeps_the_lease() -> None:
    async with cluster() as c:
        a = c.node("a")
        await c.step(a)
        c.server.fail("renew", times=2)
        for _ in range(3):
            c.advance(RENEW_S, a)
            await c.step(a)
        assert a.held == [0] and not a.runs[0].cancelled and a.runs[0].grant.term == 1
        assert a.metric("jobwatch_errors_total", error="AutoReconnect", action="resume") == 2


async def test_every_call_failing_never_crashes_and_nothing_is_taken_blind() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        await c.step(a, b)
        for operation in ("beat", "members", "take", "renew", "release"):
            c.server.fail(operation, times=100)
        await c.rounds(10, a, b)
        assert a.held == [] and b.held == []  # a stopped at its deadline; b took nothing while blind
        assert not a.elector.in_touch(a.clock) and not b.elector.in_touch(b.clock)
        c.server.failures.clear()
        await c.rounds(2, a, b)
        assert len(a.held) + len(b.held) == 1


async def test_partitions_spread_over_the_instances_as_they_come_and_go() -> None:
    async with cluster() as c:
        a = c.node("a", partitions=3)
        await c.step(a)
        assert a.held == [0, 1, 2]  # one instance holds all
        b, d = c.node("b", partitions=3), c.node("d", partitions=3)
        await c.rounds(4, a, b, d)  # two more: within a few rounds, one each
        assert sorted([*a.held, *b.held, *d.held]) == [0, 1, 2] and [len(n.held) for n in (a, b, d)] == [1, 1, 1]
        for node in (a, b, d):
            for run in node.runs[:-1]:
                if run.stop_requested:
                    assert run.finished_in_order  # handed over in order: saved, then released
        # d dies: its partition is taken over once its lease ran out.
        gone = d.held[0]
        await c.rounds(int(LEASE_S / RENEW_S) + 3, a, b)
        assert sorted([*a.held, *b.held]) == [0, 1, 2] and gone in a.held + b.held
        assert sorted(len(n.held) for n in (a, b)) == [1, 2]


async def test_no_partition_ever_has_two_holders_while_the_group_changes() -> None:
    async with cluster() as c:
        nodes = [c.node(name, partitions=4) for name in "abcde"]
        alive = nodes[:1]
        for round_ in range(60):
            if round_ in (3, 6, 9, 12):
                alive.append(nodes[len(alive)])
            if round_ == 30:
                alive.pop(1)  # a crash
            await c.step(*alive)
            c.advance(RENEW_S, *alive)
            await settle()
            holders = [k for node in alive for k in node.held]
            assert len(holders) == len(set(holders)), (round_, [(n.name, n.held) for n in alive])
        assert sorted(k for n in alive for k in n.held) == [0, 1, 2, 3]
        assert max(len(n.held) for n in alive) == 1


async def test_a_newer_instance_with_other_partitions_stops_and_the_older_goes_on() -> None:
    async with cluster() as c:
        old = c.node("old", partitions=3)
        await c.rounds(2, old)
        new = c.node("new", partitions=1)
        with pytest.raises(errors.ConfigurationProblem, match="partitions=3 .this one: 1."):
            await c.step(new)
        assert new.held == []
        await c.step(old)  # warned, not stopped
        assert old.held == [0, 1, 2]


async def test_instances_sharing_a_name_must_watch_the_same_job_types() -> None:
    async with cluster() as c:
        old = c.node("old", job_types=("collection-scan",))
        await c.rounds(1, old)
        new = c.node("new")
        with pytest.raises(errors.ConfigurationProblem, match="job_types=collection-scan"):
            await c.step(new)


async def test_a_heartbeat_that_cannot_be_written_does_not_stop_an_instance_from_leading() -> None:
    async with cluster() as c:
        a = c.node("a")
        c.server.fail("beat", times=100)  # its own heartbeat fails; the group can still be read
        await c.rounds(3, a)
        assert a.held == [0] and a.elector.in_touch(a.clock)


async def test_nothing_is_taken_while_the_group_cannot_be_read() -> None:
    async with cluster() as c:
        a = c.node("a")
        c.server.fail("members", times=3)
        for _ in range(3):
            await c.step(a)
            assert a.held == []
        await c.step(a)
        assert a.held == [0]


async def test_an_observer_takes_nothing_and_does_not_count_in_the_share() -> None:
    async with cluster() as c:
        a = c.node("a", partitions=2)
        watcher = c.node("watcher", partitions=2, observe=True)
        await c.rounds(3, a, watcher)
        assert a.held == [0, 1] and watcher.held == [] and watcher.elector.role == "observe"


async def test_clock_skew_between_processes_changes_nothing() -> None:
    async with cluster() as c:
        a, b = c.node("a"), c.node("b")
        b.clock += 86_400 * 365  # b's clock a year ahead: only its own durations matter
        await c.rounds(10, a, b)
        assert a.held == [0] and b.held == [] and not a.runs[0].cancelled
