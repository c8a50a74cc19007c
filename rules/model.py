"""Tolerant models of a job document as the C# service (and its past) wrote it.

Reading is forgiving: counters stored as strings or doubles, null or negative
counters, status case variants, missing fields and missing stages all parse.
What cannot be read safely (a counter that is not a number, a stage that is
not a document, a stage name that is not addressable as a MongoDB path) is a
``Rejection``: the job is skipped, and nothing is written to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError

from rules import status as status_mod
from rules.status import Status


def read_count(raw: object) -> int:
    """A counter as the rules use it: a non-negative whole number.

    Missing and null read as 0, and so do negative values (a counter cannot
    be below zero; the rules must not complete or un-complete on one).
    Fractions are floored: 131.9 items done is 131 done.
    """
    if type(raw) is int:  # the common case first: this runs for every counter
        return raw if raw > 0 else 0
    if raw is None:
        return 0
    if isinstance(raw, bool):  # bool is an int subclass in Python, never a count
        raise ValueError(f"a count, not a boolean ({raw!r})")
    if isinstance(raw, int):
        return max(raw, 0)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError(f"a finite number, not {raw!r}")
        return max(math.floor(raw), 0)
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"a number, not the text {raw!r}") from None
        return read_count(value)
    # Decimal128 (duck-typed: the rules do not import bson) and other numerics.
    if hasattr(raw, "to_decimal"):
        raw = raw.to_decimal()
    try:
        return read_count(float(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"a number, not {type(raw).__name__} {raw!r}") from None


Count = Annotated[int, PlainValidator(read_count)]
StatusField = Annotated[Status, PlainValidator(status_mod.parse)]


class Stage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    status: StatusField = Status.UNKNOWN
    total: Count = Field(0, alias="totalItems")
    completed: Count = Field(0, alias="completedItems")
    progress: Count = 0


def _stages(raw: object) -> object:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"stages must be a document of named stages, not {type(raw).__name__}")
    for name in raw:
        if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
            raise ValueError(f"stage name {name!r} cannot be addressed as a field path")
    return raw


class Job(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    id: Any = Field(alias="_id")
    job_type: Any = Field(None, alias="jobType")
    status: StatusField = Status.UNKNOWN
    progress: Count = 0
    total: Count = Field(0, alias="totalItems")
    completed: Count = Field(0, alias="completedItems")
    collection_id: Any = Field(None, alias="collectionId")
    stages: Annotated[dict[str, Stage], BeforeValidator(_stages)] = Field(default_factory=dict)


class Rejection(BaseModel):
    """Why a document could not be read as a job. Typed, so callers can log it
    and count it; ``reason`` reads well on its own."""

    model_config = ConfigDict(frozen=True)

    job_id: Any = None
    reason: str


def parse_job(doc: object) -> Job | Rejection:
    """Read ``doc`` as a job, or say precisely why it cannot be read."""
    if not isinstance(doc, Mapping):
        return Rejection(reason=f"a job must be a document, not {type(doc).__name__}")
    job_id = doc.get("_id")
    if job_id is None:
        return Rejection(reason="the document has no _id")
    try:
        return Job.model_validate(doc)
    except ValidationError as exc:
        return Rejection(job_id=job_id, reason=_describe(exc))


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = _field_path(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


_ALIASES = {"total": "totalItems", "completed": "completedItems", "job_type": "jobType"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(_ALIASES.get(str(part), str(part)) for part in loc)
