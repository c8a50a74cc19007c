"""Every place the server relies on mongoeco beyond its documented API.

mongoeco documents its client (``mongoeco.AsyncMongoClient``), its types
(``mongoeco.types``), its errors, its engines (``mongoeco.engines``) and its
wire proxy (``mongoeco.wire.AsyncMongoEcoProxyServer``); the rest of the
server imports only those. What the server needs beyond them is here, one
function per need, and nowhere else:

- the engine's change hub and a change-stream cursor's position: to know the
  history has every change the engine published (``published_offset``,
  ``read_offset``), to wait for the engine's next change without reading it
  (``wait_published``), and to hand the engine back its copies (``release``);
- the wire proxy's command executor and request decoding: to answer the
  commands the engine lacks (``proxy_class``, ``request_builder``; what
  it decodes: ``integer`` for its wrapped Int64s, ``app_name`` from the
  handshake), and its per-request dispatch: to close a connection as MongoDB
  does for a fail point (``CloseConnection`` in ``proxy_class``), and its
  per-connection loop: to close at once a connection whose first bytes are
  not MongoDB's (``refuse`` in ``proxy_class``: a TLS handshake);
- the memory engine's index-candidate step and its query plans
  (``indexed_memory_engine``, ``query_plans``): to serve ``$in``/``$nin``
  from indexes (``planner``);
- the aggregation compiler, the expression-extension registry and the
  wire layer's value bridge: to run a change stream's pipeline on events
  (``compile_pipeline``) and evaluate operators mongoeco lacks
  (``install``: ``$toHashedIndexKey``, ``$not``).

The server is pinned to the mongoeco minor it was tested with (4.11).
``check()`` (and ``check_engine``, on the engine's objects) runs when the
server starts: another release that moved one of these fails at once,
naming the hook and the installed version, instead of a server that starts
and then misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from bson import Decimal128

from jobwatch_embedded.errors import CloseConnection

#: Every (module, attribute) the server uses beyond mongoeco's documented
#: API, for ``check()``; ``check_engine`` checks what objects get at runtime.
HOOKS: tuple[tuple[str, str], ...] = (
    ("mongoeco._change_streams.hub", "ChangeStreamHub.current_offset"),
    ("mongoeco._change_streams.hub", "ChangeStreamHub.wait_for_event_async"),
    ("mongoeco.wire.proxy", "AsyncMongoEcoProxyServer._dispatch_wire_request"),
    ("mongoeco.wire.proxy", "AsyncMongoEcoProxyServer._handle_connection"),
    ("mongoeco.wire.executor", "WireCommandExecutor._build_request_context"),
    ("mongoeco.wire.executor", "WireCommandExecutor.execute_prepared"),
    ("mongoeco.wire.executor", "WireCommandExecutor.error_document"),
    ("mongoeco.engines.memory", "MemoryEngine._indexed_candidate_storage_keys_for_plan_locked"),
    ("mongoeco.engines.memory", "_MemoryIndexedCandidates"),
    ("mongoeco.engines.virtual_indexes", "query_can_use_index"),
    ("mongoeco.core.query_plan", "AndCondition"),
    ("mongoeco.core.query_plan", "EqualsCondition"),
    ("mongoeco.core.query_plan", "InCondition"),
    ("mongoeco.core.query_plan", "NotInCondition"),
    ("mongoeco.core.bson_ordering", "bson_equality_key"),
    ("mongoeco.core.aggregation", "apply_pipeline"),
    ("mongoeco.core.aggregation.compiled_pipeline", "compile_pipeline"),
    ("mongoeco.core.aggregation.preparation", "prepare_pipeline"),
    ("mongoeco.core.aggregation", "register_aggregation_expression_operator"),
    ("mongoeco.core.codec", "DocumentCodec"),
    ("mongoeco.core.bson_scalars", "BsonInt64"),
    ("mongoeco.wire.bson_bridge", "encode_wire_value"),
    ("mongoeco.wire.bson_bridge", "decode_wire_value"),
)
#: Attributes the engine's objects get in their constructors, checked on the
#: objects themselves when the server starts (``check_engine``, ``proxy_class``).
HUB_ATTRIBUTES = ("_events", "_base_offset", "_watcher_count", "_condition")


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
            raise HookMissing(_missing(module_name, exc)) from exc
        owner: Any = module
        for part in attribute.split("."):
            if not hasattr(owner, part):
                raise HookMissing(_missing(f"{module_name}.{attribute}", None))
            owner = getattr(owner, part)


def check_engine(client: Any, cursor: Any) -> None:
    """The instance attributes of the engine's change hub and of a change-stream
    cursor of the engine that the server reads (``check()`` sees classes)."""
    hub = _instance(client, "_change_hub")
    for name in HUB_ATTRIBUTES:
        _instance(hub, name)
    _instance(cursor, "_offset")


def _missing(hook: str, cause: Exception | None) -> str:
    reason = f" ({cause})" if cause is not None else ""
    return (
        f"mongoeco {version()} has no {hook}{reason}: this server needs mongoeco 4.11 (pip install 'mongoeco==4.11.*')"
    )


def _instance(owner: object, name: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError as exc:
        raise HookMissing(_missing(f"{type(owner).__name__}.{name}", None)) from exc


# -- the engine's change hub ---------------------------------------------------


def published_offset(client: Any) -> int:
    """How many changes the engine has published so far."""
    return int(_instance(client, "_change_hub").current_offset())


def read_offset(cursor: Any) -> int:
    """How far a change-stream cursor of the engine has read."""
    return int(_instance(cursor, "_offset"))


async def wait_published(client: Any, offset: int, timeout_s: float) -> bool:
    """Wait until the engine has published a change beyond ``offset`` (True),
    or ``timeout_s`` passed (False). Reads nothing: a cursor at ``offset``
    still gets that change."""
    hub = _instance(client, "_change_hub")
    try:
        _, change = await hub.wait_for_event_async(offset, timeout_seconds=timeout_s)
    except Exception:
        # The server's own flush read past ``offset`` and released the engine's
        # copies meanwhile (``release``): the engine answers "history no longer
        # available" for an offset it dropped, but changes beyond it were published.
        if _released_past(hub, offset):
            return True
        raise
    return change is not None


def _released_past(hub: Any, offset: int) -> bool:
    base = getattr(hub, "_base_offset", None)
    return isinstance(base, int) and offset < base


def release(client: Any, cursor: Any, readers: int) -> None:
    """Drop the engine's copies of the changes ``cursor`` has read (all but
    the last, which it resumes after), unless someone else than the server's
    ``readers`` reads the engine. The engine keeps its last changes as Python
    objects whether or not anyone still needs them."""
    hub = _instance(client, "_change_hub")
    retained = getattr(hub, "_events", None)
    if not isinstance(retained, list) or not isinstance(getattr(hub, "_base_offset", None), int):
        return
    if getattr(hub, "_watcher_count", None) != readers:
        return
    with hub._condition:
        excess = read_offset(cursor) - 1 - hub._base_offset
        if excess > 0:
            del retained[:excess]
            hub._base_offset += excess


def retained_changes(client: Any) -> int:
    """How many changes the engine still holds (for tests of ``release``)."""
    return len(_instance(_instance(client, "_change_hub"), "_events"))


# -- the wire proxy --------------------------------------------------------------


#: A wire message's header: what ``refuse`` gets of a connection's first message.
HEADER_BYTES = 16


def proxy_class(make_executor: Callable[[Any], Any], refuse: Callable[[bytes, Any], bool]) -> type[Any]:
    """mongoeco's wire proxy with its command executor replaced by
    ``make_executor(the proxy's own executor)``, ``CloseConnection``
    (raised by the executor) closing the client's connection unanswered, and
    a connection closed at once when ``refuse(its first HEADER_BYTES, peer)``
    (the proxy would otherwise wait for as many bytes as they announce)."""
    from mongoeco.wire import AsyncMongoEcoProxyServer

    class Proxy(AsyncMongoEcoProxyServer):  # type: ignore[misc]
        def __init__(self, client: Any, *, host: str, port: int) -> None:
            super().__init__(client=client, host=host, port=port)
            self.executor = make_executor(_instance(self, "_executor"))
            self._executor = self.executor

        async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readexactly(HEADER_BYTES)
            except (asyncio.IncompleteReadError, ConnectionError):
                head = b""
            if not head or refuse(head, writer.get_extra_info("peername")):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                return
            await super()._handle_connection(_Replayed(reader, head), writer)

        async def _dispatch_wire_request(self, header: Any, payload: bytes, *, connection: Any) -> bytes | None:
            try:
                reply: bytes | None = await super()._dispatch_wire_request(header, payload, connection=connection)
            except CloseConnection:
                # The proxy closes a connection whose transport failed.
                raise ConnectionAbortedError("closed by the failCommand fail point") from None
            return reply

    return Proxy


class _Replayed:
    """A connection's reader with the bytes already read from it in front."""

    def __init__(self, reader: asyncio.StreamReader, head: bytes) -> None:
        self._reader = reader
        self._head = head

    def at_eof(self) -> bool:
        return not self._head and self._reader.at_eof()

    async def readexactly(self, n: int) -> bytes:
        taken, self._head = self._head[:n], self._head[n:]
        return taken if len(taken) == n else taken + await self._reader.readexactly(n - len(taken))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def request_builder(executor: Any) -> Callable[..., Any]:
    """The proxy's decoding of a command into a request context:
    ``builder(body, **kwargs)``."""
    builder: Callable[..., Any] = _instance(executor, "_build_request_context")
    return builder


def app_name(connection: Any) -> str | None:
    """The appName the client sent in its handshake, if any."""
    metadata = getattr(connection, "client_metadata", None)
    application = metadata.get("application") if isinstance(metadata, dict) else None
    name = application.get("name") if isinstance(application, dict) else None
    return name if isinstance(name, str) else None


def integer(value: object) -> int | None:
    """An integer of a decoded command (the wire layer wraps nested Int64s)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    inner = getattr(value, "value", None)
    return inner if isinstance(inner, int) and not isinstance(inner, bool) else None


# -- the memory engine's index use -------------------------------------------------


def indexed_memory_engine(candidates: Callable[..., set[Any] | None]) -> Any:
    """A memory engine that, where its own planner finds no index candidates,
    asks ``candidates(indexes, index_data, query_plan, dialect=...)`` for a
    superset of the matching documents' storage keys. Without the hooks
    (another mongoeco), the engine as it comes."""
    from mongoeco.engines import MemoryEngine, memory

    hooks = (MemoryEngine, "_indexed_candidate_storage_keys_for_plan_locked"), (memory, "_MemoryIndexedCandidates")
    if not all(hasattr(owner, name) for owner, name in hooks):
        return MemoryEngine()

    class IndexedMemoryEngine(MemoryEngine):
        def _indexed_candidate_storage_keys_for_plan_locked(
            self, indexes: Any, index_data: Any, query_plan: Any, *, dialect: Any, collation: Any
        ) -> Any:
            found = super()._indexed_candidate_storage_keys_for_plan_locked(
                indexes, index_data, query_plan, dialect=dialect, collation=collation
            )
            if found is not None or collation is not None:
                return found
            storage_keys = candidates(indexes, index_data, query_plan, dialect=dialect)
            if storage_keys is None:
                return None
            return memory._MemoryIndexedCandidates(storage_keys)

    return IndexedMemoryEngine()


@dataclass(frozen=True)
class QueryPlans:
    """The engine's query-plan conditions and the index helpers ``planner`` reads."""

    AndCondition: Any
    EqualsCondition: Any
    InCondition: Any
    NotInCondition: Any
    bson_equality_key: Callable[[Any], Any]
    query_can_use_index: Callable[..., bool]


def query_plans() -> QueryPlans:
    from mongoeco.core.bson_ordering import bson_equality_key
    from mongoeco.core.query_plan import AndCondition, EqualsCondition, InCondition, NotInCondition
    from mongoeco.engines.virtual_indexes import query_can_use_index

    return QueryPlans(
        AndCondition, EqualsCondition, InCondition, NotInCondition, bson_equality_key, query_can_use_index
    )


# -- aggregation, expressions, values ---------------------------------------------

Document = dict[str, Any]


def compile_pipeline(pipeline: list[Document]) -> Callable[[Document], Document | None]:
    """The engine's aggregation over one event: the event out, or None."""
    from mongoeco.core.aggregation import apply_pipeline
    from mongoeco.core.aggregation.compiled_pipeline import compile_pipeline as compile_
    from mongoeco.core.aggregation.preparation import prepare_pipeline
    from mongoeco.core.codec import DocumentCodec

    internal = DocumentCodec.to_internal(pipeline)
    try:
        plan = compile_(prepare_pipeline(internal))  # type: ignore[no-untyped-call]
    except Exception:  # the engine reports a bad stage when it runs it, as MongoDB does per event
        plan = None

    def apply(event: Document) -> Document | None:
        result = plan.execute([event]) if plan is not None else apply_pipeline([event], internal)
        return DocumentCodec.to_pymongo(result[0]) if result else None

    return apply


def to_bson(value: Any) -> Any:
    """A value of the engine's types (or PyMongo's) in PyMongo's (bson) types."""
    from mongoeco.wire.bson_bridge import encode_wire_value

    return encode_wire_value(value)


def from_bson(value: Any) -> Any:
    """A PyMongo (bson) value in the engine's value types."""
    from mongoeco.wire.bson_bridge import decode_wire_value

    return decode_wire_value(value)


def install() -> None:
    """Check the hooks, then add the operators this server evaluates itself."""
    from jobwatch_embedded import hashing

    check()
    register_expression_operator("$toHashedIndexKey", lambda value: hashing.hashed_index_key(value, adapt=_to_bson))
    register_expression_operator("$not", lambda value: not _truthy(_to_bson(value)))


def _truthy(value: object) -> bool:
    """MongoDB's truth of an expression's value: false, null, undefined,
    missing and numeric zero are false; everything else (arrays, empty
    strings, documents) is true."""
    from jobwatch_embedded import hashing

    if value is None or value is False or value is hashing.UNDEFINED_VALUE:
        return False
    if isinstance(value, Decimal128):
        return not value.to_decimal().is_zero()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    return True


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
