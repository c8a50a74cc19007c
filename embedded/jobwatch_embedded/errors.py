"""Command errors in MongoDB's shape: ``{ok: 0, errmsg, code, codeName}`` and
``errorLabels`` where MongoDB sends them. Codes and names are MongoDB's
(src/mongo/base/error_codes.yml)."""

from __future__ import annotations

from typing import Any

BAD_VALUE = 2
FAILED_TO_PARSE = 9
UNAUTHORIZED = 13
TYPE_MISMATCH = 14
ILLEGAL_OPERATION = 20
CURSOR_NOT_FOUND = 43
COMMAND_NOT_FOUND = 59
INVALID_OPTIONS = 72
INVALID_RESUME_TOKEN = 260
CHANGE_STREAM_FATAL = 280
CHANGE_STREAM_HISTORY_LOST = 286

CODE_NAMES = {
    BAD_VALUE: "BadValue",
    FAILED_TO_PARSE: "FailedToParse",
    UNAUTHORIZED: "Unauthorized",
    TYPE_MISMATCH: "TypeMismatch",
    ILLEGAL_OPERATION: "IllegalOperation",
    CURSOR_NOT_FOUND: "CursorNotFound",
    COMMAND_NOT_FOUND: "CommandNotFound",
    INVALID_OPTIONS: "InvalidOptions",
    INVALID_RESUME_TOKEN: "InvalidResumeToken",
    CHANGE_STREAM_FATAL: "ChangeStreamFatalError",
    CHANGE_STREAM_HISTORY_LOST: "ChangeStreamHistoryLost",
}


class CommandError(Exception):
    def __init__(self, code: int, message: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.labels = labels

    def document(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"ok": 0.0, "errmsg": str(self), "code": self.code, "codeName": CODE_NAMES.get(self.code, "UnknownError")}
        if self.labels:
            reply["errorLabels"] = list(self.labels)
        return reply


def history_lost(message: str) -> CommandError:
    return CommandError(CHANGE_STREAM_HISTORY_LOST, message, ("NonResumableChangeStreamError",))
