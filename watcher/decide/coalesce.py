"""Per-job coalescing and the position watermark: a small pure class.

Every change event gets a sequence number. Events for one job collapse: the
queue keeps only the newest document per job, and while a job's evaluation
is in flight, further events for it become one re-evaluation afterwards.
The watermark is the newest resume token all of whose earlier events have
been handled, so saving it never skips a job that is still waiting.

No I/O and no clock of its own: the caller passes ``now`` (monotonic seconds).
Memory is bounded: at most ``max_jobs`` jobs and ``max_tokens`` unsaved
tokens; ``offer`` says no beyond that and the stream waits (back-pressure).
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from watcher.storage.position import Token


@dataclass(frozen=True)
class Work:
    """One evaluation to run: the newest document of one job."""

    key: Hashable
    doc: Mapping[str, Any]
    seq: int
    event_time_s: float | None  # when the newest event happened on the server, if known


@dataclass
class _Job:
    doc: Mapping[str, Any]
    seq: int
    event_time_s: float | None
    floor: int  # oldest event of this job not yet covered by a finished evaluation
    in_flight: bool = False
    dirty: bool = True  # a document not yet evaluated is waiting
    dirty_floor: int = 0  # oldest event that arrived while in flight
    ready_at: float = 0.0


class JobQueue:
    def __init__(self, *, max_jobs: int, progress_interval_s: float, max_tokens: int | None = None) -> None:
        self._max_jobs = max_jobs
        self._max_tokens = max_tokens or max_jobs * 10
        self._progress_interval_s = progress_interval_s
        self._jobs: dict[Hashable, _Job] = {}
        self._ready: collections.deque[Hashable] = collections.deque()
        self._tokens: collections.deque[tuple[int, Token]] = collections.deque()
        self._last_progress_write: dict[Hashable, float] = {}
        self._seq = 0

    # -- intake -----------------------------------------------------------

    def has_room(self, key: Hashable | None) -> bool:
        if len(self._tokens) >= self._max_tokens:
            return False
        return key is None or key in self._jobs or len(self._jobs) < self._max_jobs

    def offer(self, key: Hashable, doc: Mapping[str, Any], token: Token | None, event_time_s: float | None = None) -> bool:
        """Queue ``doc`` as the newest state of job ``key``. False (and nothing
        recorded) when full; the caller waits for room and offers again."""
        if not self.has_room(key):
            return False
        seq = self._next(token)
        job = self._jobs.get(key)
        if job is None:
            self._jobs[key] = _Job(doc, seq, event_time_s, floor=seq)
            self._ready.append(key)
            return True
        if job.in_flight and not job.dirty:
            job.dirty_floor = seq
        was_waiting = job.dirty and not job.in_flight
        job.doc, job.seq, job.event_time_s, job.dirty = doc, seq, event_time_s, True
        job.ready_at = 0.0  # news about a deferred job: look at it now
        if not job.in_flight and not was_waiting:
            self._ready.append(key)
        return True

    def record(self, token: Token) -> None:
        """A position with nothing to do (an idle batch's post-batch token, an
        event that needs no evaluation): handled as soon as those before it are."""
        self._next(token)

    def _next(self, token: Token | None) -> int:
        self._seq += 1
        if token is not None:
            self._tokens.append((self._seq, token))
        return self._seq

    # -- work -------------------------------------------------------------

    def take(self, now: float) -> Work | None:
        """The next job ready for evaluation, or None."""
        for _ in range(len(self._ready)):
            key = self._ready.popleft()
            job = self._jobs.get(key)
            if job is None or job.in_flight or not job.dirty:
                continue
            if job.ready_at > now:
                self._ready.append(key)
                continue
            job.in_flight, job.dirty = True, False
            return Work(key, job.doc, job.seq, job.event_time_s)
        return None

    def next_ready_at(self) -> float | None:
        """When the earliest deferred job becomes ready (None: nothing deferred)."""
        times = [job.ready_at for job in self._jobs.values() if job.dirty and not job.in_flight and job.ready_at]
        return min(times, default=None)

    def finish(self, work: Work) -> None:
        """``work`` was handled: its job's events up to ``work.seq`` are covered."""
        job = self._jobs[work.key]
        job.in_flight = False
        if job.dirty:
            job.floor = job.dirty_floor
            self._ready.append(work.key)
        else:
            del self._jobs[work.key]

    def retry(self, work: Work, at: float) -> None:
        """``work`` could not be handled (store unavailable): evaluate the job's
        newest document again at ``at``. Its events stay unhandled meanwhile."""
        job = self._jobs[work.key]
        job.in_flight = False
        if not job.dirty:
            job.dirty = True
        job.ready_at = at
        self._ready.append(work.key)

    # -- progress rate limit ---------------------------------------------

    def progress_allowed_at(self, key: Hashable, now: float) -> float:
        """When a progress-only write to ``key`` may next happen (<= now: at once)."""
        last = self._last_progress_write.get(key)
        return now if last is None else last + self._progress_interval_s

    def defer(self, work: Work, at: float) -> None:
        """A progress-only write was rate-limited: look again at ``at`` (a newer
        event makes it ready at once, so a completion is never delayed)."""
        self.retry(work, at)

    def progress_written(self, key: Hashable, now: float) -> None:
        self._last_progress_write[key] = now

    # -- position ---------------------------------------------------------

    def advance(self, now: float) -> Token | None:
        """The watermark token if it moved since the last call, else None."""
        floor = min((job.floor for job in self._jobs.values()), default=self._seq + 1)
        token = None
        while self._tokens and self._tokens[0][0] < floor:
            _, token = self._tokens.popleft()
        stale = now - self._progress_interval_s
        for key in [k for k, at in self._last_progress_write.items() if at < stale]:
            del self._last_progress_write[key]
        return token

    @property
    def pending_jobs(self) -> int:
        return len(self._jobs)

    @property
    def idle(self) -> bool:
        return not self._jobs
