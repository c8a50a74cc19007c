"""jobwatch-embedded: a MongoDB-compatible server with change streams, for
``jobwatch embedded-server``, ``jobwatch demo`` and test runs on machines
without MongoDB (and for any Python project that tests a change-stream
consumer without Docker).

An in-process engine (mongoeco) holds the data; its wire-protocol proxy
serves CRUD, and this package adds what the proxy lacks, so an unmodified
PyMongo client can ``collection.watch()`` it exactly as it watches MongoDB:

- ``engine``: the engine, and the tap that copies its changes into the history;
- ``history``: every change in order, bounded, journaled under ``--data``;
- ``events``: resume tokens, update descriptions, change-event documents;
- ``changes``: change-stream cursors (aggregate/getMore/killCursors);
- ``wire``: the interception of the proxy's commands;
- ``server``: start it (tests, demo) or serve it (the CLI command).

Needs Python >= 3.13. It is its own distribution (``embedded/pyproject.toml``)
and imports nothing from jobwatch; nothing in ``jobwatch run`` depends on it:
the watcher talks to it over the wire, as to MongoDB.
"""

from __future__ import annotations

#: Changes the history keeps at least (``--history-events``).
DEFAULT_HISTORY_EVENTS = 100_000
#: The replica set the server presents itself as (``--replica-set``): the
#: name MongoDB's own tutorials and most test setups use.
DEFAULT_REPLICA_SET = "rs0"


def available() -> bool:
    try:
        import mongoeco  # noqa: F401
    except ImportError:
        return False
    return True
