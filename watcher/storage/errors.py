"""One place decides what a failure means for the stream: resume, restart from
a sweep, or stop. Decided from PyMongo exception types, error labels and codes,
never from message text.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

from pymongo import errors as pymongo_errors


class Action(enum.Enum):
    #: Reopen from the saved position after a backoff (transient trouble).
    RESUME = "resume"
    #: The position cannot be used: sweep everything, then stream from now.
    RESTART = "restart"
    #: Retrying cannot help (misconfiguration, permissions): stop loudly.
    FATAL = "fatal"


# Server error codes (https://www.mongodb.com/docs/manual/reference/error-codes/).
UNAUTHORIZED = 13  # Unauthorized
AUTHENTICATION_FAILED = 18  # AuthenticationFailed
CURSOR_NOT_FOUND = 43  # CursorNotFound
INVALID_RESUME_TOKEN = 260  # InvalidResumeToken
CHANGE_STREAM_FATAL = 280  # ChangeStreamFatalError
CHANGE_STREAM_HISTORY_LOST = 286  # ChangeStreamHistoryLost
CAPPED_POSITION_LOST = 136  # CappedPositionLost (oplog rolled over under the cursor)
NOT_REPLICA_SET = 40573  # "The $changeStream stage is only supported on replica sets"
INTERRUPTED_AT_SHUTDOWN = 11600  # InterruptedAtShutdown
INTERRUPTED_DUE_TO_REPL_STATE_CHANGE = 11602  # InterruptedDueToReplStateChange
NOT_WRITABLE_PRIMARY = 10107  # NotWritablePrimary
NOT_PRIMARY_NO_SECONDARY_OK = 13435  # NotPrimaryNoSecondaryOk
NOT_PRIMARY_OR_SECONDARY = 13436  # NotPrimaryOrSecondary
PRIMARY_STEPPED_DOWN = 189  # PrimarySteppedDown
SHUTDOWN_IN_PROGRESS = 91  # ShutdownInProgress
HOST_UNREACHABLE = 6  # HostUnreachable
HOST_NOT_FOUND = 7  # HostNotFound
NETWORK_TIMEOUT = 89  # NetworkTimeout
SOCKET_EXCEPTION = 9001  # SocketException
EXCEEDED_TIME_LIMIT = 262  # ExceededTimeLimit
STALE_SHARD_VERSION = 63  # StaleShardVersion
STALE_EPOCH = 150  # StaleEpoch
RETRY_CHANGE_STREAM = 234  # RetryChangeStream
FAILED_TO_SATISFY_READ_PREFERENCE = 133  # FailedToSatisfyReadPreference

_RESTART_CODES = frozenset({CHANGE_STREAM_HISTORY_LOST, INVALID_RESUME_TOKEN, CHANGE_STREAM_FATAL, CAPPED_POSITION_LOST})
_FATAL_CODES = frozenset({UNAUTHORIZED, AUTHENTICATION_FAILED, NOT_REPLICA_SET})
_RESUME_CODES = frozenset(
    {
        CURSOR_NOT_FOUND,
        INTERRUPTED_AT_SHUTDOWN,
        INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
        NOT_WRITABLE_PRIMARY,
        NOT_PRIMARY_NO_SECONDARY_OK,
        NOT_PRIMARY_OR_SECONDARY,
        PRIMARY_STEPPED_DOWN,
        SHUTDOWN_IN_PROGRESS,
        HOST_UNREACHABLE,
        HOST_NOT_FOUND,
        NETWORK_TIMEOUT,
        SOCKET_EXCEPTION,
        EXCEEDED_TIME_LIMIT,
        STALE_SHARD_VERSION,
        STALE_EPOCH,
        RETRY_CHANGE_STREAM,
        FAILED_TO_SATISFY_READ_PREFERENCE,
    }
)


class StreamInvalidated(Exception):
    """The stream delivered an ``invalidate`` event (collection dropped or
    renamed): it cannot be resumed, only restarted."""


class StoreUnavailable(Exception):
    """A read or write of jobwatch's own could not reach MongoDB; it is retried.

    Raised at the storage boundary so that nothing above it handles
    ``pymongo.errors`` directly.
    """


@contextlib.contextmanager
def at_storage_boundary(what: str) -> Iterator[None]:
    """Turn the driver's transient failures inside the block into ``StoreUnavailable``."""
    try:
        yield
    except (pymongo_errors.ConnectionFailure, pymongo_errors.WaitQueueTimeoutError) as exc:
        raise StoreUnavailable(f"{what}: {name(exc)}") from exc


def classify(exc: BaseException) -> Action:
    """What the stream loop does about ``exc``.

    Labels first (the server's own verdict), then codes, then exception types.
    Unknown server errors restart from a sweep: slower, never wrong. Anything
    that is not a MongoDB error is a bug and stops the service.
    """
    if isinstance(exc, StreamInvalidated):
        return Action.RESTART
    if isinstance(exc, StoreUnavailable):
        return Action.RESUME
    if not isinstance(exc, pymongo_errors.PyMongoError):
        return Action.FATAL
    if isinstance(exc, pymongo_errors.ConfigurationError | pymongo_errors.InvalidURI):
        return Action.FATAL
    if exc.has_error_label("NonResumableChangeStreamError"):
        return Action.RESTART
    code = getattr(exc, "code", None)
    if code in _FATAL_CODES:
        return Action.FATAL
    if code in _RESTART_CODES:
        return Action.RESTART
    if exc.has_error_label("ResumableChangeStreamError") or code in _RESUME_CODES:
        return Action.RESUME
    if isinstance(exc, pymongo_errors.ConnectionFailure | pymongo_errors.CursorNotFound):
        return Action.RESUME  # network errors, timeouts, server selection
    if isinstance(exc, pymongo_errors.OperationFailure):
        return Action.RESTART
    return Action.RESUME


def name(exc: BaseException) -> str:
    """A short, stable label for metrics and logs: the code name or the type."""
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("codeName"):
        return str(details["codeName"])
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}({code})" if code is not None else type(exc).__name__


def is_not_replica_set(exc: BaseException) -> bool:
    return isinstance(exc, pymongo_errors.OperationFailure) and exc.code == NOT_REPLICA_SET
