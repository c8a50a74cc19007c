"""A fault-injecting wrapper around a real client, for tests only.

``FaultyClient(client, faults)`` behaves like the client, except that the
operations named in ``faults`` raise the exceptions planned for them:
``"<collection>.<method>"`` for ``update_one``, ``update_many``,
``find_one``, ``find_one_and_update``, ``delete_one``, ``delete_many``,
``aggregate``, ``create_index``, ``index_information``; ``"<collection>.find"`` when a
find's first batch is read and ``"<collection>.getmore"`` after its first
document (a cursor failing mid-sweep). The server's ``failCommand`` fail
point does the same on a real MongoDB; the embedded engine has none.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio


class Faults:
    def __init__(self) -> None:
        self._once: dict[str, collections.deque[BaseException]] = collections.defaultdict(collections.deque)
        self._always: dict[str, BaseException] = {}
        self.raised: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self._hangs: collections.Counter[str] = collections.Counter()
        self.hung: collections.Counter[str] = collections.Counter()

    def fail(self, op: str, exc: BaseException, times: int = 1) -> None:
        self._once[op].extend([exc] * times)

    def fail_always(self, op: str, exc: BaseException) -> None:
        self._always[op] = exc

    def hang(self, op: str, times: int = 1) -> None:
        self._hangs[op] += times

    def clear(self) -> None:
        self._once.clear()
        self._always.clear()
        self._hangs.clear()

    async def answer(self, op: str) -> None:
        """Raise the planned fault for ``op``, or never answer when planned so."""
        if self._hangs[op] > 0:
            self._hangs[op] -= 1
            self.hung[op] += 1
            await anyio.sleep_forever()
        self.check(op)

    def pending(self, op: str) -> int:
        """Planned one-shot faults on ``op`` not yet raised."""
        return len(self._once.get(op, ()))

    def check(self, op: str) -> None:
        self.calls[op] += 1
        exc = self._always.get(op)
        if exc is None and self._once.get(op):
            exc = self._once[op].popleft()
        if exc is not None:
            self.raised[op] += 1
            raise exc


class FaultyClient:
    def __init__(self, client: Any, faults: Faults) -> None:
        self._client = client
        self._faults = faults

    def __getitem__(self, name: str) -> FaultyDatabase:
        return FaultyDatabase(self._client[name], self._faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class FaultyDatabase:
    def __init__(self, db: Any, faults: Faults) -> None:
        self._db = db
        self._faults = faults

    def __getitem__(self, name: str) -> FaultyCollection:
        return FaultyCollection(self._db[name], self._faults, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _faulty(method: str) -> Callable[..., Awaitable[Any]]:
    """A collection method that first answers the fault planned for
    ``"<collection>.<method>"``, then makes the real call."""

    async def call(self: FaultyCollection, *args: Any, **kwargs: Any) -> Any:
        await self._faults.answer(f"{self._name}.{method}")
        return await getattr(self._coll, method)(*args, **kwargs)

    call.__name__ = method
    return call


class FaultyCollection:
    def __init__(self, coll: Any, faults: Faults, name: str) -> None:
        self._coll = coll
        self._faults = faults
        self._name = name

    def with_options(self, **kwargs: Any) -> FaultyCollection:
        return FaultyCollection(self._coll.with_options(**kwargs), self._faults, self._name)

    # Each awaits its planned fault (if any), then the real call.
    update_one = _faulty("update_one")
    update_many = _faulty("update_many")
    find_one = _faulty("find_one")
    find_one_and_update = _faulty("find_one_and_update")
    delete_one = _faulty("delete_one")
    delete_many = _faulty("delete_many")
    aggregate = _faulty("aggregate")
    create_index = _faulty("create_index")
    index_information = _faulty("index_information")

    def find(self, *args: Any, **kwargs: Any) -> FaultyCursor:
        return FaultyCursor(self._coll.find(*args, **kwargs), self._faults, self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coll, name)


class FaultyCursor:
    def __init__(self, cursor: Any, faults: Faults, name: str) -> None:
        self._cursor = cursor
        self._faults = faults
        self._name = name
        self._read = 0

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        self._faults.check(f"{self._name}.find" if self._read == 0 else f"{self._name}.getmore")
        doc = await self._cursor.__anext__()
        self._read += 1
        return doc

    async def close(self) -> None:
        await self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)
