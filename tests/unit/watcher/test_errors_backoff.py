from __future__ import annotations

import pytest
from bson import errors as bson_errors
from pymongo import errors as pe

from watcher.storage import backoff, errors
from watcher.storage.errors import Action


def failure(code: int, *labels: str) -> pe.OperationFailure:
    return pe.OperationFailure("boom", code=code, details={"code": code, "errorLabels": list(labels)})


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (failure(286, "NonResumableChangeStreamError"), Action.RESTART),  # ChangeStreamHistoryLost
        (failure(286), Action.RESTART),
        (failure(260), Action.RESTART),  # InvalidResumeToken
        (failure(280), Action.RESTART),  # ChangeStreamFatalError
        (failure(43), Action.RESUME),  # CursorNotFound
        (pe.CursorNotFound("gone", code=43), Action.RESUME),
        (pe.NotPrimaryError("stepdown", {"code": 10107, "errmsg": "not primary"}), Action.RESUME),
        (failure(10107), Action.RESUME),
        (failure(91, "ResumableChangeStreamError"), Action.RESUME),
        (failure(12345, "ResumableChangeStreamError"), Action.RESUME),
        (pe.NetworkTimeout("timed out"), Action.RESUME),
        (pe.AutoReconnect("reset"), Action.RESUME),
        (pe.ServerSelectionTimeoutError("no server"), Action.RESUME),
        (failure(40573), Action.FATAL),  # not a replica set
        (failure(13), Action.FATAL),  # Unauthorized
        (failure(18), Action.FATAL),  # AuthenticationFailed
        (pe.ConfigurationError("bad"), Action.FATAL),
        (failure(99999), Action.RESTART),  # unknown server error: sweep, never wrong
        (errors.StreamInvalidated("dropped"), Action.RESTART),
        (errors.StoreUnavailable("down"), Action.RESUME),
        (ValueError("a bug"), Action.FATAL),
        (pe.WriteConcernError("wc", 64, {"code": 64}), Action.RESUME),
        (pe.ExecutionTimeout("slow", 50, {"code": 50}), Action.RESUME),  # MaxTimeMSExpired
        (failure(11601), Action.RESUME),  # Interrupted
        (pe.WriteError("conflict", 112, {"code": 112}), Action.RESUME),  # WriteConflict
        (pe.WriteError("invalid", 121, {"code": 121}), Action.SKIP),  # DocumentValidationFailure
        (pe.WriteError("odd", 4242, {"code": 4242}), Action.RESTART),  # unknown: a write skips, a stream restarts
        (pe.InvalidOperation("closed cursor"), Action.RESUME),
        (pe.DocumentTooLarge("too big"), Action.SKIP),
        (bson_errors.InvalidBSON("bad"), Action.SKIP),
        (OverflowError("int too big for BSON"), Action.SKIP),
        (failure(17124), Action.RESTART),  # $size of a non-array: unknown to us, never fatal
    ],
)
def test_classify(exc: BaseException, action: Action) -> None:
    assert errors.classify(exc) is action


def test_classify_never_reads_the_message() -> None:
    assert errors.classify(pe.OperationFailure("ChangeStreamHistoryLost resume token", code=43)) is Action.RESUME


def test_error_names_are_stable_labels() -> None:
    exc = pe.OperationFailure("x", code=286, details={"code": 286, "codeName": "ChangeStreamHistoryLost"})
    assert errors.name(exc) == "ChangeStreamHistoryLost"
    assert errors.name(pe.NetworkTimeout("t")) == "NetworkTimeout"


def test_backoff_is_exponential_capped_and_jittered() -> None:
    top = [backoff.delay_s(n, base_s=0.5, max_s=30, rand=lambda: 1.0) for n in range(1, 10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30, 30, 30]
    assert backoff.delay_s(3, base_s=0.5, max_s=30, rand=lambda: 0.25) == 0.5
    assert backoff.delay_s(10_000, base_s=0.5, max_s=30, rand=lambda: 1.0) == 30


def test_backoff_resets_after_a_healthy_batch() -> None:
    b = backoff.Backoff(base_s=1, max_s=8, rand=lambda: 1.0)
    assert [b.next_delay_s() for _ in range(3)] == [1, 2, 4]
    b.reset()
    assert b.next_delay_s() == 1


@pytest.mark.parametrize(
    ("exc", "on_refusal", "outcome", "action"),
    [
        (pe.AutoReconnect("reset"), "skip", errors.StoreUnavailable, Action.RESUME),
        (pe.WriteError("odd", 4242, {"code": 4242}), "skip", errors.Rejected, Action.SKIP),
        (pe.DocumentTooLarge("too big"), "skip", errors.Rejected, Action.SKIP),
        (failure(17124), "retry", errors.StoreUnavailable, Action.RESUME),
        (bson_errors.InvalidBSON("bad"), "reopen", errors.StreamBroken, Action.RESTART),
        (failure(286), "reopen", errors.StreamBroken, Action.RESTART),
        (pe.InvalidOperation("closed"), "reopen", errors.StreamBroken, Action.RESUME),
        (failure(13), "skip", errors.ConfigurationProblem, None),
        (failure(40573), "reopen", errors.NotReplicaSet, None),
    ],
)
def test_translation_per_refusal_meaning(
    exc: BaseException, on_refusal: errors.OnRefusal, outcome: type[BaseException], action: Action | None
) -> None:
    with pytest.raises(outcome) as caught, errors.translated("op", on_refusal):
        raise exc
    if action is not None:
        assert isinstance(caught.value, errors.StorageProblem) and caught.value.action is action


def test_a_bug_is_never_translated() -> None:
    with pytest.raises(KeyError), errors.translated("op", "skip"):
        raise KeyError("a bug")


def test_nothing_above_storage_catches_driver_errors() -> None:
    """The boundary is one place: no module outside watcher/storage names a
    ``pymongo.errors`` exception in an ``except`` clause (or imports the
    module to do so). The embedded engine's adapter raises them, as PyMongo does."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[3] / "watcher"
    offenders = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(("storage/", "embedded/")):
            continue
        text = path.read_text()
        if re.search(r"pymongo\.errors|from pymongo import errors|bson\.errors|from bson import errors", text):
            offenders.append(relative)
    assert offenders == []
