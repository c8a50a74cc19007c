"""Every place the server relies on mongoeco beyond its public client API.

The server is pinned to the mongoeco minor it was tested with (4.11); these
hooks are what another release may move or change. ``check()`` runs when
the server starts and fails with the missing hook's name and the installed
mongoeco version, instead of a server that starts and then misbehaves.

Hooks:

- ``register_expression_operator``: mongoeco's aggregation-expression
  extension registry (``mongoeco.core.aggregation``), through which the
  server adds the operators it evaluates itself (``$toHashedIndexKey``);
  they then work wherever mongoeco evaluates expressions: ``$expr`` in
  ``find``/``count``/``aggregate`` filters, pipeline stages, change-stream
  pipelines.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

#: (module, attribute) of every hook below, for ``check()``.
HOOKS: tuple[tuple[str, str], ...] = (
    ("mongoeco.core.aggregation", "register_aggregation_expression_operator"),
    ("mongoeco.core.bson_scalars", "BsonInt64"),
    ("mongoeco.wire.bson_bridge", "encode_wire_value"),
)


class HookMissing(RuntimeError):
    """The installed mongoeco lacks something this server builds on."""


def version() -> str:
    import mongoeco

    return str(mongoeco.__version__)


def check() -> None:
    """Fail, naming the first missing hook and the mongoeco version, unless
    every hook this server uses is present."""
    for module_name, attribute in HOOKS:
        try:
            module = import_module(module_name)
        except ImportError as exc:
            raise HookMissing(_missing(f"{module_name}", exc)) from exc
        if not hasattr(module, attribute):
            raise HookMissing(_missing(f"{module_name}.{attribute}", None))


def _missing(hook: str, cause: Exception | None) -> str:
    reason = f" ({cause})" if cause is not None else ""
    return (
        f"mongoeco {version()} has no {hook}{reason}: this server needs mongoeco 4.11 "
        "(pip install 'mongoeco==4.11.*')"
    )


# -- expression operators -----------------------------------------------------


def install() -> None:
    """Check the hooks, then add the operators this server evaluates itself."""
    from jobwatch_embedded import hashing

    check()
    register_expression_operator("$toHashedIndexKey", lambda value: hashing.hashed_index_key(value, adapt=_to_bson))


def register_expression_operator(name: str, evaluate: Callable[[object], object]) -> None:
    """Make mongoeco evaluate ``{name: <expression>}`` with ``evaluate``: one
    argument, bare or in a one-element array, as MongoDB's fixed-arity
    operators take it. ``evaluate`` gets the argument's value as mongoeco
    holds it (missing as None); an int it returns is answered as an Int64,
    as MongoDB's operators answer longs."""
    from mongoeco.core.aggregation import register_aggregation_expression_operator
    from mongoeco.core.bson_scalars import BsonInt64
    from mongoeco.errors import OperationFailure

    def handler(document: Any, spec: object, variables: Any, dialect: Any, context: Any) -> object:
        if isinstance(spec, list):
            if len(spec) != 1:
                message = f"Expression {name} takes exactly 1 arguments. {len(spec)} were passed in."
                raise OperationFailure(message, code=16020)
            spec = spec[0]
        value = context.evaluate_expression_with_missing(document, spec, variables)
        result = evaluate(None if value is context.missing_sentinel else value)
        return BsonInt64(result) if isinstance(result, int) and not isinstance(result, bool) else result

    register_aggregation_expression_operator(name, handler)


def _to_bson(value: object) -> object:
    """One of mongoeco's scalars as PyMongo's bson value (undefined, which
    PyMongo has no type for, as ``hashing.UNDEFINED_VALUE``)."""
    from mongoeco import UndefinedType
    from mongoeco.wire.bson_bridge import encode_wire_value

    from jobwatch_embedded import hashing

    if isinstance(value, UndefinedType):
        return hashing.UNDEFINED_VALUE
    return encode_wire_value(value)
