"""jobwatch's service side: everything that talks to MongoDB or the outside world.

The public API for embedding the watcher in another asyncio application:

    from pymongo import AsyncMongoClient
    from watcher import Settings, Watcher

    client = AsyncMongoClient("mongodb://db0,db1,db2/?replicaSet=rs0")
    async with Watcher(client, Settings(database="imageviewer")) as watcher:
        report = await watcher.sweep()      # one reconciliation pass, now
        ...                                  # the stream runs in the background
    # leaving the block stops it cleanly and saves its position

See docs/reference/python-api.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ChangeSource", "PyMongoChangeSource", "Settings", "SweepReport", "Watcher"]

if TYPE_CHECKING:
    from watcher.intake.source import ChangeSource, PyMongoChangeSource
    from watcher.intake.sweep import SweepReport
    from watcher.service import Watcher
    from watcher.settings import Settings


def __getattr__(name: str) -> Any:
    # Lazy, so `import watcher.cli.main` stays quick and `rules` tests never pull the driver.
    import importlib

    homes = {
        "Watcher": "watcher.service",
        "Settings": "watcher.settings",
        "ChangeSource": "watcher.intake.source",
        "PyMongoChangeSource": "watcher.intake.source",
        "SweepReport": "watcher.intake.sweep",
    }
    if name in homes:
        return getattr(importlib.import_module(homes[name]), name)
    raise AttributeError(name)
