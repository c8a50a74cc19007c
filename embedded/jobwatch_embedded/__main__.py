"""``python -m jobwatch_embedded`` (or ``jobwatch-embedded``): serve until
SIGTERM or SIGINT; the first line of stdout is the connection string.

The same server as ``jobwatch embedded-server``, for projects that install
this package without jobwatch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobwatch_embedded import commands, history, server


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="jobwatch-embedded",
        description="A MongoDB-compatible server with change streams, on the embedded engine mongoeco.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1; 0 picks a free one (default: 0)")
    parser.add_argument(
        "--data", type=Path, default=None, metavar="DIR", help="keep data and change history in DIR across restarts"
    )
    parser.add_argument(
        "--history-events",
        type=int,
        default=history.DEFAULT_MAX_EVENTS,
        metavar="N",
        help=f"changes the history keeps at least (default: {history.DEFAULT_MAX_EVENTS:,}); "
        "a stream that falls further behind gets 286 ChangeStreamHistoryLost",
    )
    parser.add_argument(
        "--replica-set",
        default=commands.DEFAULT_SET_NAME,
        metavar="NAME",
        help=f"the replica set's name (default: {commands.DEFAULT_SET_NAME})",
    )
    arguments = parser.parse_args(argv)
    if not 0 <= arguments.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if arguments.history_events < 1:
        parser.error("--history-events must be at least 1")
    return arguments


def entry(argv: list[str] | None = None) -> int:
    arguments = parse(sys.argv[1:] if argv is None else argv)
    return server.main(
        arguments.port,
        arguments.data,
        lambda uri: print(uri, flush=True),
        history_events=arguments.history_events,
        replica_set=arguments.replica_set,
    )


if __name__ == "__main__":
    sys.exit(entry())
