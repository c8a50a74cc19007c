"""``jobwatch run``'s service loop (commands.serve, signals included) on an
embedded engine, as a process of its own. The embedded engine's change events
only reach streams opened in its own process, so the subprocess tests of
``run`` use this instead of pointing ``jobwatch run`` at a URI.

Usage: python serve_embedded.py [jobwatch settings flags...]
Prints one JSON line at exit: the saved position, read back from the engine.
"""

from __future__ import annotations

import json
import sys

import anyio
from pymongo import AsyncMongoClient

from tests.support.documents import seed_job
from watcher.cli import main as cli
from watcher.cli import commands
from watcher import embedded
from watcher.ops import logs


async def main(argv: list[str]) -> int:
    async with embedded.start() as engine:
        settings = cli.settings_from_argv(["run", "--uri", engine.uri, *argv])
        logs.setup(json_lines=settings.log_json, level=settings.log_level)
        client: AsyncMongoClient[dict] = AsyncMongoClient(engine.uri)
        db = client[settings.database]
        await db[settings.jobs_collection].insert_one(seed_job())
        code = await commands.serve(client, settings, engine.change_source(settings.database, settings.jobs_collection))
        position = await db[settings.positions_collection].find_one({"_id": settings.watcher_name}) or {}
        job = await db[settings.jobs_collection].find_one({}) or {}
        print(json.dumps({"exit": code, "position_saved": bool(position.get("token")), "job_status": job.get("status")}), flush=True)
        await client.close()
        return code


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
