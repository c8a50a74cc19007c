"""One leader per partition: the lease loop.

Every ``renew_s``, in a task of its own so that nothing slow delays it,
the renewal of every lease it holds, concurrently, each bounded by its renew
deadline. And every ``renew_s`` (a round):

1. this instance's heartbeat (``watcher.storage.members``), and the live
   instances (while they cannot be read, nothing is taken: the group is
   unknown); an older live instance with another ``partitions`` or other
   ``job_types`` under the same watcher name stops this one (exit 2);
2. its fair share (``watcher.group.share``): surplus partitions are stopped
   in order (drained, position saved) and their leases released; free
   partitions are taken up to the share, each with a new term.

While it holds a partition, the partition's pipeline (a ``Leadership``: the
stream, the dispatcher, the sweeps and the position) runs in a cancel scope
of its own. A watchdog cancels that scope at the renew deadline
(``watcher.group.tenure``), before the lease can run out and anybody else
take it; so does a renewal that finds the lease gone, and so does a
position save fenced out (``errors.Deposed``). That is ``leadership_lost``;
the partition goes back to standby and may be taken again, in a new term.

Every call to MongoDB is bounded and translated at the storage boundary: a
failure is logged, counted and tried again at the next round, which comes
sooner (a backoff, at most ``renew_s``) after a failure; only a fatal
outcome (missing privileges, a configuration mismatch) ends the loop, after
an orderly stop. On stop, each pipeline stops in order, then its lease is
released (so a standby takes over within one ``renew_s``), then this
instance's heartbeat document is removed. Cancelled without a stop (the host
application cancelled it), it still releases what it holds, bounded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from watcher.group import share
from watcher.group.stopping import Stop
from watcher.group.tenure import Tenure, Timing
from watcher.ops import logs
from watcher.ops.metrics import Metrics
from watcher.storage import backoff, errors
from watcher.storage.lease import Grant
from watcher.storage.members import Member, Role

#: On the way out, releasing the leases and removing the heartbeat may take this long.
GOODBYE_DEADLINE_S = 2.0


class Leases(Protocol):
    """``watcher.storage.lease.MongoLeases``, or a fake in tests."""

    async def take(self, partition: int) -> Grant | None: ...

    async def renew(self, grant: Grant) -> bool: ...

    async def release(self, grant: Grant) -> bool: ...

    async def release_all(self) -> int: ...


class Members(Protocol):
    """``watcher.storage.members.MongoMembers``, or a fake in tests."""

    @property
    def instance(self) -> str: ...

    async def beat(self, about: Mapping[str, Any]) -> None: ...

    async def all(self) -> list[Member]: ...

    async def leave(self) -> None: ...

    async def prune(self) -> int: ...


class Leadership(Protocol):
    """What runs while this instance holds a partition: its pipeline.

    ``run()`` returns once ``request_stop()`` was honoured in order (intake
    stopped, drained, position saved); it raises ``errors.Deposed`` when a
    fenced write found the lease gone, or a fatal outcome after an orderly
    stop of its own."""

    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


@dataclass
class Held:
    tenure: Tenure
    leadership: Leadership
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    #: Why it was asked to stop in order ("shutdown", "rebalance"), if it was.
    stopping: str | None = None
    #: Why it was lost, if it was: its pipeline was cancelled, nothing more is saved.
    lost: str | None = None


@dataclass
class _Streak:
    """Consecutive failures of one kind of call: logged when they start and end."""

    failures: int = 0

    def failed(self, action: str, message: str, exc: BaseException, **context: Any) -> None:
        self.failures += 1
        if self.failures == 1:
            logs.event(action, "WARNING", message, error=_name(exc), **context)

    def succeeded(self, action: str, **context: Any) -> None:
        if self.failures:
            logs.event(action, "INFO", "answering again", failures=self.failures, **context)
        self.failures = 0


class Elector:
    def __init__(
        self,
        leases: Leases,
        members: Members,
        *,
        partitions: int,
        timing: Timing,
        lead: Callable[[Grant], Leadership],
        about: Callable[[], Mapping[str, Any]],
        metrics: Metrics,
        job_types: tuple[str, ...] = (),
        observe: bool = False,
        retry: backoff.Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._leases = leases
        self._members = members
        self._partitions = partitions
        self._timing = timing
        self._lead = lead
        self._about = about
        self._metrics = metrics
        self._job_types = tuple(sorted(job_types))
        self._observe = observe
        self._clock = clock
        self._rng = rng or random.Random()
        self._stop = Stop()
        #: The round in progress: a stop cancels it (its calls may each wait
        #: ``renew_s`` on a server that is gone; a stop should not).
        self._round: anyio.CancelScope | None = None
        self._changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._warned_newer: set[str] = set()
        self._beats = _Streak()
        self._listings = _Streak()
        self._renewals = _Streak()
        self._takes = _Streak()
        #: After a round (or renewal) where a call failed, the next comes after this backoff (never later than renew_s).
        self._retry = retry or backoff.Backoff(base_s=timing.retry_s, max_s=timing.renew_s)
        self._renew_retry = backoff.Backoff(base_s=timing.retry_s, max_s=timing.renew_s)
        self._failed = False
        self._renew_failed = False
        self.held: dict[int, Held] = {}
        #: The live instances at the last heartbeat (this one included).
        self.members: list[Member] = []
        #: Local monotonic time MongoDB last answered a call of the lease loop.
        self.heard_at: float | None = None
        self.share = 0
        metrics.partitions(partitions)

    # -- what others read -------------------------------------------------------

    @property
    def instance(self) -> str:
        return self._members.instance

    @property
    def role(self) -> Role:
        if self._observe:
            return "observe"
        return "leader" if self.leading() else "standby"

    def leading(self) -> dict[int, Leadership]:
        """The pipelines this instance runs now (not the ones being stopped)."""
        return {k: h.leadership for k, h in self.held.items() if h.lost is None and h.stopping is None}

    def in_touch(self, now: float) -> bool:
        """MongoDB answered the lease loop within a lease (a standby that it
        does not answer cannot take over; a leader it does not answer has lost)."""
        return self.heard_at is not None and now - self.heard_at < self._timing.lease_s

    # -- the loop -------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        if self._round is not None:
            self._round.cancel()

    async def run(self, *, joined: Callable[[], None]) -> None:
        """Until ``request_stop()``: rounds every ``renew_s``; ``joined`` once
        the first round reached MongoDB. Then every pipeline stops in order and
        its lease is released. Raises a fatal outcome after that orderly stop."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watchdog)
                tg.start_soon(self._renewer)
                await self._prune()
                announced = False
                while not self._stop.is_set():
                    started = self._clock()
                    try:
                        with anyio.CancelScope() as self._round:
                            # A take whose reply a stop cut off is released by the goodbye below.
                            reached = await self.step(tg, renew=False)  # the renewer renews
                    except (errors.ConfigurationProblem, errors.Unreachable) as exc:
                        self._stop.fail(exc)
                        break
                    finally:
                        self._round = None
                    if self._stop.is_set():
                        break
                    if reached and not announced:
                        announced = True
                        joined()
                    with anyio.move_on_after(
                        max(self._pause_s(self._failed, self._retry) - (self._clock() - started), 0.0)
                    ):
                        await self._stop.wait()
                await self.step_down()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise errors.sole(group) from None
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(GOODBYE_DEADLINE_S):
                await self._goodbye()
        self._stop.raise_fatal()

    def _pause_s(self, failed: bool, retry: backoff.Backoff) -> float:
        """Until the next round: ``renew_s``, or sooner (backing off) after a failed call."""
        if not failed:
            retry.reset()
            return self._timing.renew_s
        return min(retry.next_delay_s(), self._timing.renew_s)

    async def _renewer(self) -> None:
        while True:
            started = self._clock()
            await self._renew_all()
            await anyio.sleep(
                max(self._pause_s(self._renew_failed, self._renew_retry) - (self._clock() - started), 0.0)
            )

    async def step(self, tg: anyio.abc.TaskGroup, *, renew: bool = True) -> bool:
        """One round; the pipelines of partitions taken run in ``tg``; with
        ``renew``, the leases held are renewed first (``run()`` renews in a
        task of its own). False when the group could not be read (then
        nothing is taken: the group is unknown)."""
        self._tg = tg
        self._failed = False
        if renew:
            await self._renew_all()
        reached = await self._beat()
        if not reached or self._stop.is_set() or self._observe:
            return reached
        live = [m for m in self.members if not m.observe and not self._differs(m)]  # one that differs is stopping
        self.share = share.fair_share(self._partitions, len(live))
        before = set(self.leading())
        self._rebalance(live)
        await self._take_up_to_share()
        if set(self.leading()) != before:
            await self._beat()  # the group (and jobwatch status) learns the new holding now, not a round later
        return reached

    # -- 1. heartbeat and the group -----------------------------------------------------

    async def _beat(self) -> bool:
        """Write this instance's heartbeat, then read the group's. True when the
        group could be read: a heartbeat that could not be written costs this
        instance its place in the others' fair share, not its own judgement."""
        about = {**self._about(), "role": self.role, "held": sorted(self.leading())}
        try:
            with anyio.fail_after(self._timing.renew_s):
                await self._members.beat(about)
        except (errors.StoreUnavailable, TimeoutError) as exc:
            self._count(exc)
            self._failed = True
            self._beats.failed("instance_heartbeat_failed", "could not write the heartbeat; trying again", exc)
        else:
            self._beats.succeeded("instance_heartbeat_recovered")
            self.heard_at = self._clock()
        try:
            with anyio.fail_after(self._timing.renew_s):
                everyone = await self._members.all()
        except (errors.StoreUnavailable, TimeoutError) as exc:
            self._count(exc)
            self._failed = True
            self._listings.failed(
                "instance_list_failed", "could not read the instances; taking nothing until it can", exc
            )
            return False
        self._listings.succeeded("instance_list_recovered")
        self.heard_at = self._clock()
        live = [m for m in everyone if m.alive(self._timing.lease_s)]
        if len([m for m in live if not m.observe]) != len([m for m in self.members if not m.observe]):
            logs.event(
                "group_changed",
                "INFO",
                "live instances changed",
                instances=len([m for m in live if not m.observe]),
                partitions=self._partitions,
                instance=self.instance,
            )
        self.members = live
        if not self._observe:
            self._check_settings(live)
        return True

    def _check_settings(self, live: list[Member]) -> None:
        """Instances sharing a name must split the jobs alike: the newer of two
        that differ stops (an older one is already doing the work)."""
        me = next((m for m in live if m.instance == self.instance), None)
        my_age = me.started_age_s if me is not None and me.started_age_s is not None else 0.0
        for other in live:
            if other.instance == self.instance or other.observe:
                continue
            differs = self._differs(other)
            if not differs:
                continue
            other_age = other.started_age_s or 0.0
            if other_age > my_age or (other_age == my_age and other.instance < self.instance):
                raise errors.ConfigurationProblem(
                    f"instance {other.instance} of this watcher name runs with {'; '.join(differs)}: "
                    "instances sharing a name must use the same partitions and job types. Stop them all "
                    "before changing partitions (docs: Running more than one), or give this one another --watcher-name"
                )
            if other.instance not in self._warned_newer:
                self._warned_newer.add(other.instance)
                logs.event(
                    "instance_settings_differ",
                    "WARNING",
                    "a newer instance with other settings started; it stops itself",
                    other=other.instance,
                    differs="; ".join(differs),
                )

    def _differs(self, other: Member) -> list[str]:
        """How ``other``'s settings differ from this instance's, where they must not."""
        differs = []
        if other.partitions is not None and other.partitions != self._partitions:
            differs.append(f"partitions={other.partitions} (this one: {self._partitions})")
        if other.job_types is not None and tuple(sorted(other.job_types)) != self._job_types:
            theirs, mine = ",".join(other.job_types) or "every type", ",".join(self._job_types) or "every type"
            differs.append(f"job_types={theirs} (this one: {mine})")
        return differs

    async def _prune(self) -> None:
        try:
            with anyio.fail_after(self._timing.renew_s):
                await self._members.prune()
        except (errors.StoreUnavailable, TimeoutError) as exc:
            self._count(exc)  # old documents only cost space; the next start prunes them
            self._failed = True

    # -- 2. renewals ----------------------------------------------------------------

    async def _renew_all(self) -> None:
        self._renew_failed = False
        current = [(k, h) for k, h in self.held.items() if h.lost is None]
        if not current:
            return
        async with anyio.create_task_group() as tg:
            for k, held in current:
                tg.start_soon(self._renew, k, held)

    async def _renew(self, partition: int, held: Held) -> None:
        sent_at = self._clock()
        budget_s = held.tenure.renew_budget_s(sent_at)
        if budget_s <= 0:
            return  # the watchdog stops it
        try:
            with anyio.fail_after(budget_s):
                ours = await self._leases.renew(held.tenure.grant)
        except (errors.StoreUnavailable, TimeoutError) as exc:
            self._count(exc)
            self._renew_failed = True
            self._renewals.failed(
                "lease_renew_failed",
                "could not renew the lease; trying again before the renew deadline",
                exc,
                partition=partition,
                term=held.tenure.grant.term,
            )
            return
        self._renewals.succeeded("lease_renew_recovered")
        self.heard_at = self._clock()
        if ours:
            held.tenure.renewed(sent_at)
        else:
            self.lose(partition, "the lease ran out or another instance holds it now")

    async def _watchdog(self) -> None:
        while True:
            now = self._clock()
            self.enforce(now)
            deadlines = [h.tenure.deadline_at for h in self.held.values() if h.lost is None]
            wake_at = min([*deadlines, now + self._timing.renew_s])
            await anyio.sleep(max(wake_at - now, 0.001))

    def enforce(self, now: float) -> list[int]:
        """Lose every partition past its renew deadline (the lease may run out
        soon on the server); the partitions lost."""
        lapsed = [k for k, h in self.held.items() if h.lost is None and h.tenure.lapsed(now)]
        for partition in lapsed:
            self.lose(
                partition,
                f"not renewed within the renew deadline ({self._timing.deadline_s:g}s): "
                "stopping before the lease runs out",
            )
        return lapsed

    def lose(self, partition: int, reason: str) -> None:
        """Stop the partition's pipeline now, saving nothing: it is no longer ours."""
        held = self.held.get(partition)
        if held is None or held.lost is not None:
            return
        held.lost = reason
        held.scope.cancel()
        self._metrics.leadership_changes.labels("lost").inc()
        self._show(partition, None)
        logs.event(
            "leadership_lost",
            "WARNING",
            "stopped streaming and writing: " + reason,
            partition=partition,
            term=held.tenure.grant.term,
            instance=self.instance,
        )

    # -- 3. the share ---------------------------------------------------------------------

    def _rebalance(self, live: list[Member]) -> None:
        below = any(len(m.held) < self.share for m in live if m.instance != self.instance)
        for partition in share.surplus(self.leading(), self.share, someone_below_share=below):
            self._stop_in_order(partition, "rebalance")

    async def _take_up_to_share(self) -> None:
        for partition in share.candidates(self._partitions, self.held, self._rng):
            if len(self.leading()) >= self.share or self._stop.is_set():
                return
            sent_at = self._clock()
            try:
                with anyio.fail_after(self._timing.renew_s):
                    grant = await self._leases.take(partition)
            except (errors.StoreUnavailable, TimeoutError) as exc:
                self._count(exc)
                self._failed = True
                self._takes.failed(
                    "lease_take_failed", "could not try the lease; trying again next round", exc, partition=partition
                )
                return
            self._takes.succeeded("lease_take_recovered")
            self.heard_at = self._clock()
            if grant is not None:
                self._start(grant, sent_at)

    def _start(self, grant: Grant, sent_at: float) -> None:
        assert self._tg is not None, "step() was given the task group"
        held = Held(Tenure(grant, self._timing, renewed_at=sent_at), self._lead(grant))
        self.held[grant.partition] = held
        self._metrics.leadership_changes.labels("acquired").inc()
        self._show(grant.partition, grant.term)
        logs.event(
            "leadership_acquired",
            "INFO",
            "took the partition's lease: it streams from the partition's saved position, or from now after a sweep",
            partition=grant.partition,
            term=grant.term,
            vacant_s=None if grant.vacant_s is None else round(grant.vacant_s, 3),
            previous_holder=grant.previous_holder,
            instance=self.instance,
        )
        self._tg.start_soon(self._lead_while_held, grant.partition, held)

    async def _lead_while_held(self, partition: int, held: Held) -> None:
        try:
            with held.scope:
                try:
                    await held.leadership.run()
                except errors.Deposed:
                    self.lose(partition, "a fenced write matched nothing: another instance took the lease")
                    return
                except (errors.ConfigurationProblem, errors.Unreachable) as exc:
                    # The pipeline stopped in order first: its position is saved.
                    self._stop.fail(exc)
                if held.lost is None:
                    await self._release(partition, held)
        finally:
            if self.held.get(partition) is held:
                del self.held[partition]
            self._show(partition, None)
            self._changed.set()

    def _stop_in_order(self, partition: int, why: str) -> None:
        held = self.held[partition]
        if held.stopping is None and held.lost is None:
            held.stopping = why
            held.leadership.request_stop()
            logs.event(
                "leadership_stepping_down",
                "INFO",
                "stopping the partition in order, then releasing its lease",
                partition=partition,
                term=held.tenure.grant.term,
                reason=why,
                instance=self.instance,
            )

    async def _release(self, partition: int, held: Held) -> None:
        grant = held.tenure.grant
        released = False
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._timing.renew_s):
            try:
                released = await self._leases.release(grant)
            except errors.StoreUnavailable as exc:
                self._count(exc)
        if released:
            self._metrics.leadership_changes.labels("released").inc()
            logs.event(
                "leadership_released",
                "INFO",
                "position saved, lease released",
                partition=partition,
                term=grant.term,
                reason=held.stopping,
                instance=self.instance,
            )
        else:
            logs.event(
                "lease_not_released",
                "WARNING",
                "could not release the lease: it runs out by itself",
                partition=partition,
                term=grant.term,
                instance=self.instance,
            )

    # -- stopping -----------------------------------------------------------------------

    async def step_down(self) -> None:
        """Every pipeline stops in order and releases its lease (renewals go on
        meanwhile, in ``run()``'s renewer, so a slow drain does not lose the
        lease halfway)."""
        for partition in list(self.held):
            self._stop_in_order(partition, "shutdown")
        while True:
            self._changed = anyio.Event()  # before looking: an end signalled after this is not missed
            if not self.held:
                return
            await self._changed.wait()

    async def _goodbye(self) -> None:
        """Release whatever is still ours (also a take whose reply never came)
        and remove this instance's heartbeat, so the group rebalances at once."""
        try:
            if not self._observe:
                await self._leases.release_all()
            await self._members.leave()
        except errors.StoreUnavailable as exc:
            logs.event(
                "goodbye_failed",
                "WARNING",
                "could not release leases or remove the heartbeat at exit; they run out by themselves",
                error=exc.error,
            )
        except errors.ConfigurationProblem:
            pass  # stopping already, for this reason or another

    # -- helpers ------------------------------------------------------------------------

    def _show(self, partition: int, term: int | None) -> None:
        label = str(partition)
        self._metrics.leader.labels(label).set(0 if term is None else 1)
        self._metrics.lease_term.labels(label).set(0 if term is None else term)
        self._metrics.partitions_held.set(len(self.leading()))

    def _count(self, exc: BaseException) -> None:
        # A call that ran out of time is retried like any transient failure.
        action = exc.action if isinstance(exc, errors.StorageProblem) else errors.Action.RESUME
        self._metrics.errors.labels(_name(exc), action.value).inc()


def _name(exc: BaseException) -> str:
    return "LeaseCallTimeout" if isinstance(exc, TimeoutError) else errors.name(exc)
