"""The one translation of driver errors.

Every PyMongo (and BSON) exception that reaches jobwatch's code is caught
here, at the storage boundary, and becomes one of a few outcomes the loop
understands:

- ``StoreUnavailable``: retry later, with backoff (network, elections,
  timeouts, write conflicts, a cursor the server forgot);
- ``Rejected``: this one job (or event) cannot be handled: skip it, log it
  once, count it; the next sweep tries again;
- ``StreamBroken``: the change stream must reopen, resuming (``RESUME``) or
  from now after a catch-up sweep (``RESTART``);
- ``ConfigurationProblem`` (exit 2) / ``Unreachable`` (exit 3): the server
  cannot serve us and no retry will change that;
- ``Deposed``: a write fenced by a partition's lease (holder and term)
  matched nothing: another instance holds the partition now.

``classify(exc)`` decides, from exception types, error labels and codes
(each commented with its name), never from message text. Nothing above
``watcher/storage`` catches a ``pymongo.errors`` exception.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Literal

from bson import errors as bson_errors
from pymongo import errors as pymongo_errors


class Action(enum.Enum):
    #: Transient trouble: retry after a backoff (the stream resumes from its position).
    RESUME = "resume"
    #: The stream's position cannot be used: catch-up sweep, then stream from now.
    RESTART = "restart"
    #: This one document or job cannot be handled: skip it, the next sweep retries.
    SKIP = "skip"
    #: Retrying cannot help (misconfiguration, missing privileges): stop with a reason.
    FATAL = "fatal"


#: Exit codes of the deliberate fatal outcomes (the CLI's table says the same).
EXIT_CONFIGURATION = 2
EXIT_UNREACHABLE = 3

# Server error codes (https://www.mongodb.com/docs/manual/reference/error-codes/).
BAD_VALUE = 2  # BadValue
UNAUTHORIZED = 13  # Unauthorized
AUTHENTICATION_FAILED = 18  # AuthenticationFailed
TYPE_MISMATCH = 14  # TypeMismatch
CURSOR_NOT_FOUND = 43  # CursorNotFound
MAX_TIME_MS_EXPIRED = 50  # MaxTimeMSExpired (PyMongo's ExecutionTimeout)
WRITE_CONFLICT = 112  # WriteConflict
DOCUMENT_VALIDATION_FAILURE = 121  # DocumentValidationFailure
INVALID_RESUME_TOKEN = 260  # InvalidResumeToken
CHANGE_STREAM_FATAL = 280  # ChangeStreamFatalError
CHANGE_STREAM_HISTORY_LOST = 286  # ChangeStreamHistoryLost
CAPPED_POSITION_LOST = 136  # CappedPositionLost (oplog rolled over under the cursor)
NOT_REPLICA_SET = 40573  # Location40573: "$changeStream stage is only supported on replica sets"
INTERRUPTED = 11601  # Interrupted (killOp, maxTimeMS on some paths)
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
LOCK_TIMEOUT = 24  # LockTimeout
TOO_MANY_LOGICAL_SESSIONS = 261  # TooManyLogicalSessions
INVALID_PIPELINE_OPERATOR = 168  # InvalidPipelineOperator (e.g. no $toHashedIndexKey before 4.4.10)

_RESTART_CODES = frozenset(
    {CHANGE_STREAM_HISTORY_LOST, INVALID_RESUME_TOKEN, CHANGE_STREAM_FATAL, CAPPED_POSITION_LOST}
)
_FATAL_CODES = frozenset({UNAUTHORIZED, AUTHENTICATION_FAILED, NOT_REPLICA_SET})
_RESUME_CODES = frozenset(
    {
        CURSOR_NOT_FOUND,
        MAX_TIME_MS_EXPIRED,
        WRITE_CONFLICT,
        INTERRUPTED,
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
        LOCK_TIMEOUT,
        TOO_MANY_LOGICAL_SESSIONS,
    }
)
#: Write errors that are about the one document written: skip the job.
_DOCUMENT_CODES = frozenset({BAD_VALUE, TYPE_MISMATCH, DOCUMENT_VALIDATION_FAILURE})


# -- the outcomes --------------------------------------------------------------


class StorageProblem(Exception):
    """Base of the translated outcomes; ``error`` is the stable short name
    (code name or type) of the driver error behind it."""

    default_action = Action.RESUME

    def __init__(self, message: str, *, error: str | None = None, action: Action | None = None) -> None:
        super().__init__(message)
        self.error = error or type(self).__name__
        self.action = action or self.default_action


class StoreUnavailable(StorageProblem):
    """Retry later: the server is there but could not do it now."""


class Rejected(StorageProblem):
    """This one job (or event) cannot be handled; the rest goes on."""

    default_action = Action.SKIP


class StreamBroken(StorageProblem):
    """The change stream must reopen: ``action`` is RESUME (from its position)
    or RESTART (from now, after a catch-up sweep)."""


class StreamInvalidated(Exception):
    """The stream delivered an ``invalidate`` event (collection dropped or
    renamed): it cannot be resumed, only restarted."""


class ConfigurationProblem(Exception):
    """The watcher cannot run as configured; the message says how to fix it (exit 2)."""

    exit_code = EXIT_CONFIGURATION


class NotReplicaSet(ConfigurationProblem):
    """The server cannot serve change streams (a standalone ``mongod``)."""


class Unreachable(Exception):
    """No MongoDB server answered within the server-selection timeout (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class Deposed(Exception):
    """A write conditional on a partition's lease (holder and term) matched
    nothing: the lease ran out and another instance took it. The deposed
    pipeline stops at once; nothing it still holds may be saved."""

    def __init__(self, message: str, *, partition: int, term: int) -> None:
        super().__init__(message)
        self.partition = partition
        self.term = term


#: What a failure that no retry fixes (a refusal: SKIP or RESTART) means
#: where the driver call was made: ``"skip"`` the one job or document it was
#: about (a write, path A's counts of one collection); ``"retry"`` the whole
#: call later (a read, which must not report itself complete after skipping
#: what it could not read); ``"reopen"`` the change stream (every failure of
#: a stream call reopens it, resuming or from now).
OnRefusal = Literal["retry", "skip", "reopen"]


# -- the decision ------------------------------------------------------------------


def classify(exc: BaseException) -> Action:
    """What a failure means, wherever it happened.

    Labels first (the server's own verdict), then codes, then exception
    types. Unknown server errors restart from a sweep: slower, never wrong.
    Anything that is not a MongoDB or BSON error is a bug: FATAL, and
    ``translated`` lets it through untouched so it stops the service loudly.
    """
    if isinstance(exc, StreamInvalidated):
        return Action.RESTART
    if isinstance(exc, StorageProblem):
        return exc.action
    if isinstance(exc, bson_errors.BSONError):
        # InvalidBSON (undecodable reply), InvalidDocument and DocumentTooLarge
        # (an update that cannot be encoded): about one document.
        return Action.SKIP
    if isinstance(exc, OverflowError):
        return Action.SKIP  # an integer BSON cannot hold (encoding an update)
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
    if (
        exc.has_error_label("ResumableChangeStreamError")
        or exc.has_error_label("RetryableWriteError")
        or code in _RESUME_CODES
    ):
        return Action.RESUME
    if isinstance(
        exc, pymongo_errors.ConnectionFailure | pymongo_errors.CursorNotFound | pymongo_errors.ExecutionTimeout
    ):
        return Action.RESUME  # network errors, timeouts, server selection, a forgotten cursor
    if isinstance(exc, pymongo_errors.WriteConcernError | pymongo_errors.WaitQueueTimeoutError):
        return Action.RESUME  # the write may or may not have applied: the guard makes a retry safe
    if isinstance(exc, pymongo_errors.InvalidOperation):
        return Action.RESUME  # a cursor or stream used after it was closed: open a new one
    if isinstance(exc, pymongo_errors.WriteError) and code in _DOCUMENT_CODES:
        return Action.SKIP
    if isinstance(exc, pymongo_errors.OperationFailure):
        return Action.RESTART
    return Action.RESUME


def name(exc: BaseException) -> str:
    """A short, stable label for metrics and logs: the code name or the type."""
    if isinstance(exc, StorageProblem):
        return exc.error
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("codeName"):
        return str(details["codeName"])
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}({code})" if code is not None else type(exc).__name__


def _server_message(exc: BaseException) -> str:
    """``": <the server's errmsg>"``, when the error carries one."""
    details = getattr(exc, "details", None)
    message = details.get("errmsg") if isinstance(details, dict) else None
    return f": {message}" if message else ""


def is_not_replica_set(exc: BaseException) -> bool:
    return isinstance(exc, NotReplicaSet) or (
        isinstance(exc, pymongo_errors.OperationFailure) and exc.code == NOT_REPLICA_SET
    )


def translate(exc: BaseException, what: str, on_refusal: OnRefusal) -> BaseException:
    """The outcome ``exc`` stands for in ``what``, or ``exc`` itself when it is
    not a driver error (a bug: it must surface as it is).

    The same classification serves every call; only what a refusal means
    differs (``on_refusal``): a write the server refuses for an unknown
    reason skips the job (the next sweep retries it), a read retries, the
    stream restarts from a sweep.
    """
    action = classify(exc)
    label = name(exc)
    if action is Action.FATAL:
        if not isinstance(exc, pymongo_errors.PyMongoError):
            return exc
        if is_not_replica_set(exc):
            return NotReplicaSet(f"{what}: the server cannot serve change streams ({label})")
        if isinstance(exc, pymongo_errors.ConfigurationError | pymongo_errors.InvalidURI):
            return ConfigurationProblem(f"{what}: {label}: {exc}")
        said = _server_message(exc)
        if getattr(exc, "code", None) == AUTHENTICATION_FAILED:
            return ConfigurationProblem(
                f"{what}: authentication failed ({label}{said}): check the user name, password, authSource and "
                "authMechanism in the URI"
            )
        return ConfigurationProblem(
            f"{what}: MongoDB refused jobwatch ({label}{said}); check the user's roles and credentials"
        )
    message = f"{what}: {label}"
    if on_refusal == "reopen":
        if action is Action.SKIP:
            action = Action.RESTART  # an event we cannot decode: go on from now; the sweep covers it
        return StreamBroken(message, error=label, action=action)
    if on_refusal == "skip":
        if action is Action.RESTART:
            action = Action.SKIP
        if action is Action.SKIP:
            return Rejected(message, error=label, action=action)
        return StoreUnavailable(message, error=label, action=action)
    # A read: an unreadable document or an unknown server error is retried
    # later as a whole (a sweep that skipped what it could not read would
    # report itself complete).
    return StoreUnavailable(message, error=label, action=Action.RESUME)


def code(exc: BaseException) -> int | None:
    """The server's error code behind a translated outcome (None if none)."""
    cause = exc.__cause__ if isinstance(exc, StorageProblem) else exc
    value = getattr(cause, "code", None)
    return value if isinstance(value, int) else None


def sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a task group's failure stands for: a deliberate fatal outcome
    if there is one anywhere in the group, else a ``Deposed``, else the one
    error inside nested single-member groups, else the group itself (a bug:
    all of it)."""
    picked = group.subgroup(lambda exc: isinstance(exc, ConfigurationProblem | Unreachable))
    if picked is None:
        picked = group.subgroup(lambda exc: isinstance(exc, Deposed))
    if picked is not None:
        group = picked
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) >= 1:
        if len(error.exceptions) > 1 and picked is None:
            break
        error = error.exceptions[0]
    return error


_DRIVER_ERRORS: tuple[type[BaseException], ...] = (pymongo_errors.PyMongoError, bson_errors.BSONError, OverflowError)


@contextlib.contextmanager
def translated(what: str, on_refusal: OnRefusal) -> Iterator[None]:
    """Turn every driver error inside the block into its outcome (see ``translate``)."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        outcome = translate(exc, what, on_refusal)
        if outcome is exc:
            raise
        raise outcome from exc
    except StreamInvalidated as exc:
        raise StreamBroken(f"{what}: {exc}", error="invalidate", action=Action.RESTART) from exc
