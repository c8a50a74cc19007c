"""What the server knows of each collection beyond the engine: its UUID (as
expanded change events report it) and whether it records pre- and
post-images (``changeStreamPreAndPostImages``).

MongoDB keeps both in its catalog; mongoeco keeps neither (it keeps the
options given to ``create``, and has no ``collMod``). The server primes this
catalog from the engine's collections and their ``create`` options at
start, keeps it as collections come and go, and stores what ``collMod``
changes in its private database, so it survives a restart with ``--data``.
UUIDs are drawn at start and at each creation: a restart gives existing
collections new ones.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

OPTIONS_COLLECTION = "collections"


@dataclass
class Collection:
    uuid: bytes
    images: bool = False  # changeStreamPreAndPostImages enabled
    view: bool = False


def images_enabled(options: object) -> bool:
    """``changeStreamPreAndPostImages: {enabled: true}`` in create or collMod options."""
    spec = options.get("changeStreamPreAndPostImages") if isinstance(options, dict) else None
    return isinstance(spec, dict) and spec.get("enabled") is True


class Catalog:
    def __init__(self) -> None:
        self._collections: dict[tuple[str, str], Collection] = {}

    def get(self, db: str, coll: str) -> Collection | None:
        return self._collections.get((db, coll))

    def add(self, db: str, coll: str, *, images: bool = False, view: bool = False) -> Collection:
        collection = Collection(uuid.uuid4().bytes, images, view)
        self._collections[(db, coll)] = collection
        return collection

    def drop(self, db: str, coll: str) -> Collection | None:
        return self._collections.pop((db, coll), None)

    def drop_database(self, db: str) -> None:
        for key in [key for key in self._collections if key[0] == db]:
            del self._collections[key]

    def rename(self, db: str, coll: str, to_db: str, to_coll: str) -> None:
        """A renamed collection keeps its UUID and options, as in MongoDB."""
        collection = self._collections.pop((db, coll), None)
        if collection is not None:
            self._collections[(to_db, to_coll)] = collection

    async def prime(self, client: Any, private_db: str) -> None:
        """Every collection and view of the engine, with its options, and the
        image settings ``collMod`` stored."""
        stored: dict[str, bool] = {}
        async for document in client[private_db][OPTIONS_COLLECTION].find({}):
            stored[str(document["_id"])] = bool(document.get("images"))
        for db_name in await client.list_database_names():
            if db_name == private_db:
                continue
            async for info in await client[db_name].list_collections():
                name, options = info["name"], info.get("options", {})
                images = stored.get(f"{db_name}.{name}", images_enabled(options))
                self.add(db_name, name, images=images, view=info.get("type") == "view")

    async def forget(self, client: Any, private_db: str, db: str, coll: str | None) -> None:
        """Drop what ``collMod`` stored for a dropped collection (or database)."""
        key: object = f"{db}.{coll}" if coll is not None else {"$regex": f"^{re.escape(db)}\\."}
        selector = {"_id": key}
        await client[private_db][OPTIONS_COLLECTION].delete_many(selector)

    async def store_images(self, client: Any, private_db: str, db: str, coll: str, images: bool) -> None:
        collection = self._collections.get((db, coll))
        if collection is not None:
            collection.images = images
        key = f"{db}.{coll}"
        await client[private_db][OPTIONS_COLLECTION].replace_one(
            {"_id": key}, {"_id": key, "images": images}, upsert=True
        )
