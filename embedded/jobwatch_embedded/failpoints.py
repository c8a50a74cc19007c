"""``configureFailPoint``: MongoDB's test fail points, for every command the
server answers (its own change-stream commands and the engine's alike).

Two fail points, as MongoDB 7.0 runs them (src/mongo/db/commands.cpp,
``evaluateFailCommandFailPoint``; getmore_cmd.cpp):

- ``failCommand``: before a command listed in ``data.failCommands`` runs
  (``configureFailPoint`` itself never fails), optionally only for a client
  whose ``appName`` or a command whose ``namespace`` matches: sleep
  ``blockTimeMS`` if ``blockConnection``; then close the connection
  (``closeConnection``), or answer ``errorCode`` with "Failing command via
  'failCommand' failpoint"; ``errorLabels`` replace the labels MongoDB would
  attach;
- ``failGetMoreAfterCursorCheckout``: a ``getMore`` that found its cursor
  fails with ``errorCode`` (InternalError by default), and the cursor is gone.

Modes: ``"alwaysOn"``, ``"off"``, ``{times: n}`` (the next n matching
commands), ``{skip: n}`` (all but the next n). A matching command is one the
fail point would act on; others leave the count alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from jobwatch_embedded import errors, hooks

FAIL_COMMAND = "failCommand"
FAIL_GET_MORE = "failGetMoreAfterCursorCheckout"
KNOWN = (FAIL_COMMAND, FAIL_GET_MORE)
FAIL_POINT_SET_FAILED = 266
INTERNAL_ERROR = 1


@dataclass
class FailPoint:
    mode: str = "off"  # "off", "alwaysOn", "times" or "skip"
    remaining: int = 0  # for "times": activations left; for "skip": matches to let pass
    data: dict[str, Any] = field(default_factory=dict)
    entered: int = 0

    def take(self) -> bool:
        """Whether a matching command activates the fail point now (and count
        it); the owner re-reads ``armed`` after."""
        if self.mode == "off":
            return False
        if self.mode == "skip" and self.remaining > 0:
            self.remaining -= 1
            return False
        if self.mode == "times":
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode = "off"
        self.entered += 1
        return True


@dataclass(frozen=True)
class Caller:
    """Who sent a command: what ``failCommand``'s filters look at."""

    command: str
    db: str
    collection: str | None
    app_name: str | None


class FailPoints:
    def __init__(self) -> None:
        self._points = {name: FailPoint() for name in KNOWN}
        #: Any fail point on: read before every command, so a plain attribute.
        self.armed = False

    def _rearm(self) -> None:
        self.armed = any(point.mode != "off" for point in self._points.values())

    def configure(self, command: dict[str, Any]) -> dict[str, Any]:
        """``configureFailPoint``'s reply (``count``: activations so far)."""
        name = command.get("configureFailPoint")
        if name not in self._points:
            raise errors.CommandError(FAIL_POINT_SET_FAILED, f"{name} not found")
        mode, remaining = _mode(command.get("mode"))
        data = command.get("data", {})
        if not isinstance(data, dict):
            raise errors.CommandError(errors.TYPE_MISMATCH, "the 'data' option must be a document")
        block_ms = hooks.integer(data.get("blockTimeMS"))
        if data.get("blockConnection") and (block_ms is None or block_ms < 0):
            raise errors.CommandError(
                errors.INVALID_OPTIONS, "must specify 'blockTimeMS' when 'blockConnection' is true"
            )
        previous = self._points[name].entered
        self._points[name] = FailPoint(mode, remaining, dict(data))
        self._rearm()
        return {"count": previous, "ok": 1.0}

    async def before_command(self, caller: Caller) -> None:
        """``failCommand``, before the command runs: may sleep, close the
        connection (``CloseConnection``) or fail it (``CommandError``)."""
        point = self._points[FAIL_COMMAND]
        data = point.data
        code = hooks.integer(data.get("errorCode"))
        acts = bool(data.get("closeConnection")) or bool(data.get("blockConnection")) or code is not None
        if point.mode == "off" or not acts or not _matches(data, caller) or not point.take():
            return
        self._rearm()
        labels = _labels(data)
        if data.get("blockConnection"):
            await asyncio.sleep((hooks.integer(data.get("blockTimeMS")) or 0) / 1000)
        if data.get("closeConnection"):
            raise errors.CloseConnection()
        if code is not None:
            raise errors.CommandError(code, "Failing command via 'failCommand' failpoint", labels)

    def after_cursor_checkout(self, caller: Caller) -> None:
        """``failGetMoreAfterCursorCheckout``, once a getMore has its cursor."""
        point = self._points[FAIL_GET_MORE]
        if point.mode == "off" or not _matches({**point.data, "failCommands": ["getMore"]}, caller) or not point.take():
            return
        self._rearm()
        code = hooks.integer(point.data.get("errorCode"))
        raise errors.CommandError(
            INTERNAL_ERROR if code is None else code, "Hit the 'failGetMoreAfterCursorCheckout' failpoint"
        )


def _mode(spec: object) -> tuple[str, int]:
    if spec in ("off", "alwaysOn"):
        return str(spec), 0
    if isinstance(spec, dict) and len(spec) == 1:
        ((key, value),) = spec.items()
        count = hooks.integer(value)
        if key in ("times", "skip") and count is not None and count >= 0:
            return (key if count > 0 or key == "skip" else "off"), count
    raise errors.CommandError(
        errors.BAD_VALUE, f"unsupported fail point mode {spec!r}: 'off', 'alwaysOn', {{times: n}} or {{skip: n}}"
    )


def _matches(data: dict[str, Any], caller: Caller) -> bool:
    if caller.command == "configureFailPoint":
        return False  # banned even when listed, or it could never be turned off
    if "appName" in data and data["appName"] != caller.app_name:
        return False
    if "namespace" in data and data["namespace"] != f"{caller.db}.{caller.collection}":
        return False
    if "failAllCommands" in data:
        return True
    commands = data.get("failCommands", [])
    return isinstance(commands, list) and caller.command in commands


def _labels(data: dict[str, Any]) -> tuple[str, ...] | None:
    labels = data.get("errorLabels")
    if isinstance(labels, list):
        return tuple(str(label) for label in labels)
    return None
