"""Per-job coalescing and the position watermark: a small pure class.

Every change event gets a sequence number. Events for one job collapse: the
queue keeps only the newest document per job, and while a job's evaluation
is in flight, further events for it become one re-evaluation afterwards.
The watermark is the newest resume token all of whose earlier events have
been handled, so saving it never skips a job that is still waiting.

Handled tokens are trimmed as work finishes (not only when the position is
saved), so a full token backlog frees room the moment the job holding it
back is done: the stream never waits on the periodic save.

No I/O and no clock of its own: the caller passes ``now`` (monotonic seconds).
Memory is bounded: at most ``max_jobs`` jobs and ``max_tokens`` unhandled
tokens; ``offer`` says no beyond that and the stream waits (back-pressure).
Every operation is O(log n) in the jobs waiting: deferred jobs sit in a heap
ordered by ready time, job floors in another (stale entries are skipped
when they reach the top: lazy deletion).

Trailing progress writes live beside the queue, not in it: a progress write
the dispatcher holds back (rate limit, budget) leaves the job's newest
document in ``_trailing`` and finishes the job, so its events count as
handled and the watermark moves on. The document comes back as work when
its write is due (``take_trailing``), unless a newer event for the job
arrived first (``offer`` drops it: the newer document decides). A trailing
write lost to a crash costs stale progress until the next sweep, never a
completion: completions are never held back.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from watcher.storage.position import Token

Offered = Literal["queued", "covered", "full"]


class Work(NamedTuple):
    """One evaluation to run: the newest document of one job (a tuple: one is
    made per evaluation, and a frozen dataclass costs a ``__setattr__`` per field)."""

    key: Hashable
    doc: Mapping[str, Any]
    seq: int
    event_time_s: float | None  # when the newest event happened on the server, if known
    counts: Mapping[str, int] | None = None  # path A's settled collection counts (from a sweep)
    ticket: Any = None  # a sweep's claim on the outcome (opaque here)
    received_s: float | None = None  # when the newest event was read (the caller's clock)
    trailing: bool = False  # a held-back progress write come due (see ``take_trailing``)


@dataclass(slots=True)
class _Job:
    doc: Mapping[str, Any]
    seq: int
    event_time_s: float | None
    floor: int  # oldest event of this job not yet covered by a finished evaluation
    received_s: float | None = None
    in_flight: bool = False
    dirty: bool = True  # a document not yet evaluated is waiting
    dirty_floor: int = 0  # oldest event that arrived while in flight
    ready_at: float = 0.0
    queued: bool = False  # an entry for it is in the ready deque
    counts: Mapping[str, int] | None = None
    ticket: Any = None
    trailing: bool = False


class _Trail(NamedTuple):
    """A held-back progress write: the job's newest document and when to write it."""

    doc: Mapping[str, Any]
    event_time_s: float | None
    received_s: float | None
    due_at: float


class JobQueue:
    def __init__(self, *, max_jobs: int, progress_interval_s: float, max_tokens: int | None = None) -> None:
        self._max_jobs = max_jobs
        self._max_tokens = max_tokens or max_jobs * 10
        self._progress_interval_s = progress_interval_s
        self._jobs: dict[Hashable, _Job] = {}
        self._ready: collections.deque[Hashable] = collections.deque()
        self._deferred: list[tuple[float, int, Hashable]] = []  # (ready_at, tie, key)
        self._floors: list[tuple[int, int, Hashable]] = []  # (floor, tie, key)
        self._tie = itertools.count()
        self._tokens: collections.deque[tuple[int, Token]] = collections.deque()
        self._watermark: Token | None = None  # newest handled token not yet returned by advance()
        self._last_progress_write: dict[Hashable, float] = {}
        self._trailing: dict[Hashable, _Trail] = {}
        self._trailing_due: list[tuple[float, int, Hashable]] = []  # (due_at, tie, key)
        self._seq = 0

    # -- intake -----------------------------------------------------------

    def has_room(self, key: Hashable | None) -> bool:
        if len(self._tokens) >= self._max_tokens:
            return False
        return key is None or key in self._jobs or len(self._jobs) < self._max_jobs

    @property
    def full(self) -> bool:
        """The backlog is at its cap: the stream is waiting for work to finish."""
        return len(self._tokens) >= self._max_tokens or len(self._jobs) >= self._max_jobs

    @property
    def roomy(self) -> bool:
        """Below the low-water mark (nine tenths of each cap): a stream that
        waited for room goes on from here, not at every job that finishes
        (that would cost a wake-up per job just when the watcher is behind)."""
        return len(self._tokens) * 10 < self._max_tokens * 9 and len(self._jobs) * 10 < self._max_jobs * 9

    def offer(
        self,
        key: Hashable,
        doc: Mapping[str, Any],
        token: Token | None,
        event_time_s: float | None = None,
        received_s: float | None = None,
    ) -> bool:
        """Queue ``doc`` as the newest state of job ``key``. False (and nothing
        recorded) when full; the caller waits for room and offers again."""
        if not self.has_room(key):
            return False
        seq = self._next(token)
        if self._trailing:
            self._trailing.pop(key, None)  # the newer document decides
        job = self._jobs.get(key)
        if job is None:
            job = self._jobs[key] = _Job(doc, seq, event_time_s, floor=seq, received_s=received_s)
            self._push_floor(key, job)
            self._enqueue(key, job)
            return True
        if job.in_flight and not job.dirty:
            job.dirty_floor = seq
        job.doc, job.seq, job.event_time_s, job.received_s, job.dirty = doc, seq, event_time_s, received_s, True
        job.trailing = False  # news, not the held-back write
        job.counts = None  # the counters moved: path A's evidence is stale
        job.ready_at = 0.0  # news about a deferred job: look at it now
        if not job.in_flight:
            self._enqueue(key, job)
        return True

    def offer_swept(
        self, key: Hashable, doc: Mapping[str, Any], counts: Mapping[str, int] | None, ticket: Any
    ) -> Offered:
        """Queue a job the sweep read, with its path A counts. "covered" when
        the job is already queued or in flight: the stream's document is at
        least as new as the sweep's, and it will be evaluated anyway."""
        if key in self._jobs:
            return "covered"
        if not self.has_room(key):
            return "full"
        self._trailing.pop(key, None)  # the sweep read the job afresh
        seq = self._next(None)
        job = self._jobs[key] = _Job(doc, seq, None, floor=seq, counts=counts, ticket=ticket)
        self._push_floor(key, job)
        self._enqueue(key, job)
        return "queued"

    def record(self, token: Token) -> None:
        """A position with nothing to do (an idle batch's post-batch token, an
        event that needs no evaluation): handled as soon as those before it are."""
        self._next(token)
        self._trim()

    def _next(self, token: Token | None) -> int:
        self._seq += 1
        if token is not None:
            self._tokens.append((self._seq, token))
        return self._seq

    def _enqueue(self, key: Hashable, job: _Job) -> None:
        if not job.queued:
            job.queued = True
            self._ready.append(key)

    def _push_floor(self, key: Hashable, job: _Job) -> None:
        heapq.heappush(self._floors, (job.floor, next(self._tie), key))

    # -- work -------------------------------------------------------------

    def take(self, now: float) -> Work | None:
        """The next job ready for evaluation, or None."""
        self._release_due(now)
        while self._ready:
            key = self._ready.popleft()
            job = self._jobs.get(key)
            if job is None:
                continue
            job.queued = False
            if job.in_flight or not job.dirty or job.ready_at > now:
                continue  # stale entry; a deferred job waits in the heap
            job.in_flight, job.dirty, job.ready_at = True, False, 0.0
            work = Work(key, job.doc, job.seq, job.event_time_s, job.counts, job.ticket, job.received_s, job.trailing)
            job.counts = job.ticket = None
            job.trailing = False
            return work
        return None

    def _release_due(self, now: float) -> None:
        while self._deferred and self._deferred[0][0] <= now:
            at, _, key = heapq.heappop(self._deferred)
            job = self._jobs.get(key)
            if job is not None and job.ready_at == at and job.dirty and not job.in_flight:
                job.ready_at = 0.0
                self._enqueue(key, job)

    def next_ready_at(self) -> float | None:
        """When the earliest deferred job becomes ready (None: nothing deferred)."""
        while self._deferred:
            at, _, key = self._deferred[0]
            job = self._jobs.get(key)
            if job is not None and job.ready_at == at and job.dirty and not job.in_flight:
                return at
            heapq.heappop(self._deferred)  # stale: the job moved on
        return None

    def finish(self, work: Work) -> None:
        """``work`` was handled: its job's events up to ``work.seq`` are covered."""
        job = self._jobs[work.key]
        job.in_flight = False
        if job.dirty:
            job.floor = job.dirty_floor
            self._push_floor(work.key, job)
            self._enqueue(work.key, job)
        else:
            del self._jobs[work.key]
        self._trim()

    def retry(self, work: Work, at: float) -> None:
        """``work`` could not be handled (store unavailable): evaluate the job's
        newest document again at ``at``. Its events stay unhandled meanwhile."""
        job = self._jobs[work.key]
        job.in_flight = False
        job.dirty = True
        self._give_back(job, work)
        self._defer_at(work.key, job, at)

    def _give_back(self, job: _Job, work: Work) -> None:
        """A sweep's claim stays with its job until an evaluation finishes; its
        counts too, unless a newer document arrived meanwhile."""
        job.ticket = job.ticket or work.ticket
        if job.seq == work.seq:
            job.counts = work.counts

    def _defer_at(self, key: Hashable, job: _Job, at: float) -> None:
        job.ready_at = at
        heapq.heappush(self._deferred, (at, next(self._tie), key))

    # -- progress rate limit ---------------------------------------------

    def progress_allowed_at(self, key: Hashable, now: float) -> float:
        """When a progress-only write to ``key`` may next happen (<= now: at once)."""
        last = self._last_progress_write.get(key)
        return now if last is None else last + self._progress_interval_s

    def defer(self, work: Work, at: float) -> None:
        """A progress-only write was rate-limited: look again at ``at``. If a
        newer document arrived while this one was being looked at, it is
        evaluated at once instead: it may be the completion, which is never
        delayed by a rate limit that only applies to progress."""
        job = self._jobs[work.key]
        if job.dirty:  # newer news: evaluate it now
            job.in_flight = False
            job.ready_at = 0.0
            self._give_back(job, work)
            self._enqueue(work.key, job)
            return
        self.retry(work, at)

    def progress_written(self, key: Hashable, now: float) -> None:
        self._last_progress_write[key] = now

    # -- trailing progress writes ----------------------------------------

    def trail(self, work: Work, due_at: float) -> None:
        """Hold back ``work``'s progress write until ``due_at`` without holding
        back its events: the job is finished now (the watermark moves on) and
        its document waits beside the queue. If a newer document arrived
        while this one was looked at, that one is evaluated at once instead."""
        job = self._jobs[work.key]
        if not job.dirty:
            if len(self._trailing) >= self._max_jobs and work.key not in self._trailing:
                self._trailing.pop(next(iter(self._trailing)))  # bounded: the oldest waits for the next sweep
            self._trailing[work.key] = _Trail(work.doc, work.event_time_s, work.received_s, due_at)
            heapq.heappush(self._trailing_due, (due_at, next(self._tie), work.key))
        self.finish(work)

    def next_trailing_at(self) -> float | None:
        """When the earliest held-back progress write is due (None: none held)."""
        while self._trailing_due:
            at, _, key = self._trailing_due[0]
            trail = self._trailing.get(key)
            if trail is not None and trail.due_at == at:
                return at
            heapq.heappop(self._trailing_due)  # superseded by a newer event, or taken
        return None

    def take_trailing(self, now: float) -> Work | None:
        """A held-back progress write that is due, as work (the job counts as
        queued while it is evaluated and written), or None."""
        at = self.next_trailing_at()
        if at is None or at > now or len(self._jobs) >= self._max_jobs:
            return None
        _, _, key = heapq.heappop(self._trailing_due)
        trail = self._trailing.pop(key)
        seq = self._next(None)
        job = _Job(trail.doc, seq, trail.event_time_s, floor=seq, received_s=trail.received_s, trailing=True)
        self._jobs[key] = job
        self._push_floor(key, job)
        job.in_flight, job.dirty = True, False
        return Work(key, trail.doc, seq, trail.event_time_s, None, None, trail.received_s, True)

    @property
    def trailing_jobs(self) -> int:
        """Jobs whose progress write is held back."""
        return len(self._trailing)

    # -- position ---------------------------------------------------------

    def _floor(self) -> int:
        while self._floors:
            floor, _, key = self._floors[0]
            job = self._jobs.get(key)
            if job is not None and job.floor == floor:
                return floor
            heapq.heappop(self._floors)  # the job finished or its floor moved up
        return self._seq + 1

    def _trim(self) -> None:
        """Drop the tokens whose events are all handled; the newest of them is
        the watermark the next ``advance()`` returns."""
        floor = self._floor()
        while self._tokens and self._tokens[0][0] < floor:
            _, self._watermark = self._tokens.popleft()

    def advance(self, now: float) -> Token | None:
        """The watermark token if it moved since the last call, else None."""
        self._trim()
        token, self._watermark = self._watermark, None
        stale = now - self._progress_interval_s
        for key in [k for k, at in self._last_progress_write.items() if at < stale]:
            del self._last_progress_write[key]
        return token

    @property
    def pending_jobs(self) -> int:
        return len(self._jobs)

    @property
    def backlog_tokens(self) -> int:
        return len(self._tokens)

    @property
    def idle(self) -> bool:
        return not self._jobs
