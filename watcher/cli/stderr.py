"""The one-line error every command ends with on stderr.

Its own module, light to import: ``main`` prints with it before any command
(and the driver it needs) is loaded.
"""

from __future__ import annotations

import sys

from watcher.ops import logs, printable


def fail(message: str) -> None:
    """``jobwatch: <message>`` on stderr, redacted and printable: an error may
    quote anything (a driver's message, a config file's text, a job's id)."""
    print(f"jobwatch: {printable.text(logs.redacted(message))}", file=sys.stderr, flush=True)
