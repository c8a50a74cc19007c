"""Command errors in MongoDB's shape: ``{ok: 0, errmsg, code, codeName}`` with
``errorLabels`` where MongoDB 7.0 attaches them. Codes, names and categories
are MongoDB's (src/mongo/base/error_codes.yml); the labels follow its
``ErrorLabelBuilder`` (src/mongo/db/error_labels.cpp) for what this server
can answer: change-stream labels, not transactions' or retryable writes'."""

from __future__ import annotations

from typing import Any

BAD_VALUE = 2
FAILED_TO_PARSE = 9
UNAUTHORIZED = 13
TYPE_MISMATCH = 14
ILLEGAL_OPERATION = 20
NAMESPACE_NOT_FOUND = 26
CURSOR_NOT_FOUND = 43
NO_MATCHING_DOCUMENT = 47
COMMAND_NOT_FOUND = 59
INVALID_OPTIONS = 72
INVALID_NAMESPACE = 73
NO_REPLICATION_ENABLED = 76
INVALID_RESUME_TOKEN = 260
CHANGE_STREAM_FATAL = 280
CHANGE_STREAM_HISTORY_LOST = 286
STAGE_SHAPE = 40323
UNRECOGNIZED_PIPELINE_STAGE = 40324
IDL_UNKNOWN_FIELD = 40415
NOT_LAST_STAGE = 40601
SPLIT_FAILED = 7182500
BSON_OBJECT_TOO_LARGE = 10334
PRE_IMAGE_ID_MISSING = 51770

# Names of every code MongoDB 7.0 can send that a client of this server may
# meet (errors of its own, and codes a fail point may be asked to answer).
CODE_NAMES = {
    1: "InternalError",
    BAD_VALUE: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    8: "UnknownError",
    FAILED_TO_PARSE: "FailedToParse",
    11: "UserNotFound",
    UNAUTHORIZED: "Unauthorized",
    TYPE_MISMATCH: "TypeMismatch",
    ILLEGAL_OPERATION: "IllegalOperation",
    24: "LockTimeout",
    NAMESPACE_NOT_FOUND: "NamespaceNotFound",
    27: "IndexNotFound",
    CURSOR_NOT_FOUND: "CursorNotFound",
    NO_MATCHING_DOCUMENT: "NoMatchingDocument",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    COMMAND_NOT_FOUND: "CommandNotFound",
    63: "StaleShardVersion",
    64: "WriteConcernFailed",
    67: "CannotCreateIndex",
    68: "IndexAlreadyExists",
    INVALID_OPTIONS: "InvalidOptions",
    73: "InvalidNamespace",
    NO_REPLICATION_ENABLED: "NoReplicationEnabled",
    79: "UnknownReplWriteConcern",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    100: "UnsatisfiableWriteConcern",
    112: "WriteConflict",
    115: "CommandNotSupported",
    121: "DocumentValidationFailure",
    133: "FailedToSatisfyReadPreference",
    134: "ReadConcernMajorityNotAvailableYet",
    136: "CappedPositionLost",
    150: "StaleEpoch",
    166: "CommandNotSupportedOnView",
    175: "QueryPlanKilled",
    189: "PrimarySteppedDown",
    211: "KeyNotFound",
    216: "ElectionInProgress",
    234: "RetryChangeStream",
    237: "CursorKilled",
    251: "NoSuchTransaction",
    256: "TransactionCommitted",
    266: "FailPointSetFailed",
    INVALID_RESUME_TOKEN: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    CHANGE_STREAM_FATAL: "ChangeStreamFatalError",
    CHANGE_STREAM_HISTORY_LOST: "ChangeStreamHistoryLost",
    9001: "SocketException",
    BSON_OBJECT_TOO_LARGE: "BSONObjectTooLarge",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11601: "Interrupted",
    11602: "InterruptedDueToReplStateChange",
    13388: "StaleConfig",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    IDL_UNKNOWN_FIELD: "IDLUnknownField",
    50915: "BackupCursorOpenConflictWithCheckpoint",
}

# error_codes.yml's categories, as MongoDB 7.0 has them, for the labels below.
RETRIABLE = frozenset({6, 7, 89, 91, 134, 189, 262, 358, 9001, 10107, 11600, 11602, 13435, 13436, 50915})
NETWORK = frozenset({6, 7, 89, 317, 9001})
NEEDS_RETARGETING = frozenset({63, 150, 13388})
NON_RESUMABLE_CHANGE_STREAM = frozenset({CHANGE_STREAM_FATAL, CHANGE_STREAM_HISTORY_LOST})
RETRY_CHANGE_STREAM = 234
FAILED_TO_SATISFY_READ_PREFERENCE = 133

RESUMABLE_LABEL = "ResumableChangeStreamError"
NON_RESUMABLE_LABEL = "NonResumableChangeStreamError"


def code_name(code: int) -> str:
    """MongoDB's name for ``code`` (``Location<code>`` for one it has no name for)."""
    return CODE_NAMES.get(code, f"Location{code}")


class CommandError(Exception):
    """A command's failure, answered as MongoDB answers it.

    ``labels`` None: the labels MongoDB would attach (``labels_for``);
    a tuple (possibly empty): exactly those, as a fail point's ``errorLabels``
    overrides them."""

    def __init__(self, code: int, message: str, labels: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.labels = labels

    def document(self, *, change_stream: bool = False) -> dict[str, Any]:
        """The reply; ``change_stream``: the failed command was a change
        stream's ``aggregate`` or ``getMore`` (for its labels)."""
        reply: dict[str, Any] = {"ok": 0.0, "errmsg": str(self), "code": self.code}
        reply["codeName"] = code_name(self.code)
        labels = self.labels if self.labels is not None else labels_for(self.code, change_stream=change_stream)
        if labels:
            reply["errorLabels"] = list(labels)
        return reply


def labels_for(code: int, *, change_stream: bool) -> tuple[str, ...]:
    """``ErrorLabelBuilder::build`` for a command outside a transaction and
    not a retryable write: a change stream's ``aggregate``/``getMore`` failing
    with a retriable, network or retargeting error (or RetryChangeStream,
    FailedToSatisfyReadPreference) is resumable; ChangeStreamFatalError and
    ChangeStreamHistoryLost are not, whichever command sent them."""
    resumable = (
        code in RETRIABLE
        or code in NETWORK
        or code in NEEDS_RETARGETING
        or code in (RETRY_CHANGE_STREAM, FAILED_TO_SATISFY_READ_PREFERENCE)
    )
    if change_stream and resumable:
        return (RESUMABLE_LABEL,)
    if code in NON_RESUMABLE_CHANGE_STREAM:
        return (NON_RESUMABLE_LABEL,)
    return ()


class CloseConnection(BaseException):
    """Raised where MongoDB ends the client's session: the wire front closes
    the connection without answering. A BaseException: nothing on the way
    out (the engine's error handling included) may turn it into a reply."""


def history_lost(message: str) -> CommandError:
    return CommandError(CHANGE_STREAM_HISTORY_LOST, message)
