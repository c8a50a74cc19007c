"""The change-stream pipeline stages a cursor applies to each event.

A cursor's pipeline (the stages after ``$changeStream``) runs once per event
per cursor, so its cost multiplies with the event rate and the number of
watchers. mongoeco's general aggregation costs about 1.5 ms per event for the
watcher's ``$match`` + ``$project`` (0.7 ms compiled): more than the engine's
own update. This module compiles a pipeline once, when the cursor opens:

- the narrow shapes change-stream clients send are evaluated here directly:
  ``$match`` on the fields the server itself writes as strings
  (``operationType``, ``ns.db``, ``ns.coll``) with a string or ``$in`` of
  strings, combined with ``$and``/``$or``; and inclusion ``$project`` (``1``
  or ``true``) of top-level fields and of fields one level down
  (``fullDocument.status``), with MongoDB's rules for arrays and for
  sub-documents left empty;
- anything else goes to mongoeco's compiled pipeline (or its general one),
  so every allowed stage keeps MongoDB's semantics.

The direct shapes are exactly those whose answer cannot depend on a
client's document: the matched fields are the server's own strings, and an
inclusion projection of ``a`` or ``a.b`` copies values whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from jobwatch_embedded import events

#: A stage, or a whole pipeline: the event out (possibly changed), or None (filtered out).
Apply = Callable[[events.Document], "events.Document | None"]

#: Event fields the server always writes as strings (or leaves out).
SERVER_STRING_FIELDS = frozenset({"operationType", "ns.db", "ns.coll"})


def compile_stages(pipeline: list[events.Document]) -> Apply | None:
    """One function applying the whole pipeline to an event (``None``: the
    event is filtered out); ``None`` for an empty pipeline."""
    if not pipeline:
        return None
    direct = [_direct(stage) for stage in pipeline]
    if all(step is not None for step in direct):
        steps = [step for step in direct if step is not None]
        return lambda event: _chain(steps, event)
    return _engine(pipeline)


def _chain(steps: list[Apply], event: events.Document) -> events.Document | None:
    current: events.Document | None = event
    for step in steps:
        if current is None:
            return None
        current = step(current)
    return current


def _direct(stage: events.Document) -> Apply | None:
    ((name, spec),) = stage.items()
    if name == "$match":
        predicate = _predicate(spec)
        return None if predicate is None else (lambda event: event if predicate(event) else None)
    if name == "$project":
        return _inclusion(spec)
    return None


# -- $match on the server's own string fields --------------------------------


def _predicate(spec: object) -> Callable[[events.Document], bool] | None:
    if not isinstance(spec, dict) or not spec:
        return None
    parts: list[Callable[[events.Document], bool]] = []
    for key, value in spec.items():
        part = _logical(key, value) if key in ("$and", "$or") else _field(key, value)
        if part is None:
            return None
        parts.append(part)
    return lambda event: all(part(event) for part in parts)


def _logical(key: str, value: object) -> Callable[[events.Document], bool] | None:
    if not isinstance(value, list) or not value:
        return None
    branches = [_predicate(branch) for branch in value]
    if any(branch is None for branch in branches):
        return None
    checks = [branch for branch in branches if branch is not None]
    if key == "$and":
        return lambda event: all(check(event) for check in checks)
    return lambda event: any(check(event) for check in checks)


def _field(path: str, condition: object) -> Callable[[events.Document], bool] | None:
    if path not in SERVER_STRING_FIELDS:
        return None
    if isinstance(condition, str):
        wanted = frozenset((condition,))
    elif (
        isinstance(condition, dict)
        and list(condition) == ["$in"]
        and isinstance(condition["$in"], list)
        and all(isinstance(v, str) for v in condition["$in"])
    ):
        wanted = frozenset(condition["$in"])
    else:
        return None
    head, _, tail = path.partition(".")

    def check(event: events.Document) -> bool:
        value = event.get(head)
        if tail:
            value = value.get(tail) if isinstance(value, dict) else None
        return isinstance(value, str) and value in wanted

    return check


# -- inclusion $project ------------------------------------------------------


def _inclusion(spec: object) -> Apply | None:
    if not isinstance(spec, dict) or not spec:
        return None
    top: set[str] = set()
    nested: dict[str, set[str]] = {}
    for path, flag in spec.items():
        if not isinstance(path, str) or flag is not True and not (type(flag) is int and flag == 1):
            return None
        if path == "_id":
            continue  # kept by default anyway
        parts = path.split(".")
        if len(parts) == 1 and parts[0] and not parts[0].startswith("$"):
            top.add(parts[0])
        elif len(parts) == 2 and all(p and not p.startswith("$") for p in parts):
            nested.setdefault(parts[0], set()).add(parts[1])
        else:
            return None
    if top & nested.keys():
        return None  # a path collision: MongoDB refuses it; let the engine say so
    return lambda event: _project(event, top, nested)


def _project(event: events.Document, top: set[str], nested: dict[str, set[str]]) -> events.Document:
    out: events.Document = {}
    for key, value in event.items():
        if key == "_id" or key in top:
            out[key] = value
        elif key in nested:
            kept = _inside(value, nested[key])
            if kept is not None:
                out[key] = kept
    return out


def _inside(value: object, fields: set[str]) -> object | None:
    """``a.b`` applied to ``a``'s value, as MongoDB does: a sub-document keeps
    the listed fields in its own order (possibly none: ``{}``); an array
    applies it to each element, keeping sub-documents and arrays and
    dropping scalars; a scalar ``a`` is dropped. (mongoeco drops the empty
    sub-documents MongoDB keeps: here the server follows MongoDB.)"""
    if isinstance(value, Mapping):  # a dict, or the history's RawBSONDocument
        return {k: v for k, v in value.items() if k in fields}
    if isinstance(value, list):
        return [_inside(item, fields) for item in value if isinstance(item, Mapping | list)]
    return None


# -- everything else: the engine's aggregation ------------------------------


def _engine(pipeline: list[events.Document]) -> Apply:
    from jobwatch_embedded import hooks

    run = hooks.compile_pipeline(pipeline)
    return lambda event: run(events.materialize(event))
