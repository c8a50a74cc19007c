from __future__ import annotations

from watcher.decide.coalesce import JobQueue


def queue(**kw: object) -> JobQueue:
    return JobQueue(max_jobs=kw.pop("max_jobs", 10), progress_interval_s=kw.pop("progress_interval_s", 1.0), **kw)  # type: ignore[arg-type]


def tok(n: int) -> dict[str, int]:
    return {"_data": n}


def test_events_for_one_job_collapse_to_its_newest_document() -> None:
    q = queue()
    for n in range(1, 6):
        assert q.offer("a", {"_id": "a", "n": n}, tok(n))
    work = q.take(0)
    assert work is not None and work.doc["n"] == 5
    assert q.take(0) is None


def test_events_during_an_evaluation_become_one_re_evaluation() -> None:
    q = queue()
    q.offer("a", {"n": 1}, tok(1))
    first = q.take(0)
    assert first is not None
    q.offer("a", {"n": 2}, tok(2))
    q.offer("a", {"n": 3}, tok(3))
    assert q.take(0) is None  # per-job serial: not while in flight
    q.finish(first)
    second = q.take(0)
    assert second is not None and second.doc["n"] == 3
    q.finish(second)
    assert q.idle


def test_watermark_waits_for_the_oldest_unhandled_event() -> None:
    q = queue()
    q.offer("a", {}, tok(1))
    q.offer("b", {}, tok(2))
    q.record(tok(3))  # an idle batch
    a, b = q.take(0), q.take(0)
    assert a is not None and b is not None
    q.finish(b)
    assert q.advance(0) is None  # job a (event 1) still in flight
    q.finish(a)
    assert q.advance(0) == tok(3)
    assert q.advance(0) is None  # unchanged since


def test_watermark_holds_at_an_event_that_arrived_during_flight() -> None:
    q = queue()
    q.offer("a", {}, tok(1))
    w = q.take(0)
    assert w is not None
    q.offer("a", {}, tok(2))
    q.offer("b", {}, tok(3))
    q.finish(w)  # covers event 1 only
    assert q.advance(0) == tok(1)


def test_full_queue_refuses_new_jobs_but_takes_news_of_known_ones() -> None:
    q = queue(max_jobs=2)
    assert q.offer("a", {}, tok(1)) and q.offer("b", {}, tok(2))
    assert not q.offer("c", {}, tok(3))
    assert q.offer("a", {"newer": True}, tok(4))
    w = q.take(0)
    assert w is not None
    q.finish(w)
    assert q.offer("c", {}, tok(5))


def test_token_backlog_is_bounded_too() -> None:
    q = queue(max_jobs=100, max_tokens=3)
    assert q.offer("a", {}, tok(1))
    q.record(tok(2))
    q.record(tok(3))
    assert not q.has_room("a")
    assert not q.offer("a", {}, tok(4))


def test_deferred_progress_waits_but_news_makes_it_ready_at_once() -> None:
    q = queue(progress_interval_s=1.0)
    q.offer("a", {"n": 1}, tok(1))
    w = q.take(10.0)
    assert w is not None
    q.progress_written("a", 10.0)
    q.finish(w)
    q.offer("a", {"n": 2}, tok(2))
    w = q.take(10.2)
    assert w is not None
    assert q.progress_allowed_at("a", 10.2) == 11.0
    q.defer(w, 11.0)
    assert q.take(10.5) is None
    assert q.next_ready_at() == 11.0
    assert q.take(11.0) is not None
    # A newer event (maybe the completing one) is never held back by the limit.
    q2 = queue()
    q2.offer("a", {"n": 1}, tok(1))
    w2 = q2.take(0)
    assert w2 is not None
    q2.defer(w2, 100.0)
    q2.offer("a", {"n": 2}, tok(2))
    taken = q2.take(0)
    assert taken is not None and taken.doc["n"] == 2


def test_retry_keeps_the_events_unhandled() -> None:
    q = queue()
    q.offer("a", {}, tok(1))
    w = q.take(0)
    assert w is not None
    q.retry(w, 5.0)
    assert q.advance(0) is None
    assert q.take(1.0) is None
    again = q.take(5.0)
    assert again is not None
    q.finish(again)
    assert q.advance(6.0) == tok(1)
