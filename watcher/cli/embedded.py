"""Where jobwatch meets its embedded server.

``jobwatch embedded-server`` and ``jobwatch demo`` serve the embedded engine
(mongoeco) over the MongoDB wire protocol. That server is a distribution of
its own, ``jobwatch-embedded`` (import name ``jobwatch_embedded``, in this
repository's ``embedded/`` folder, Python >= 3.13): the service itself never
needs it, it only talks to a server over the wire.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = (
    "the embedded server is not installed: it is the jobwatch-embedded package (Python >= 3.13), "
    "installed from a jobwatch checkout with 'pip install ./embedded' (./dev does it)"
)


def available() -> bool:
    """The embedded server and its engine can be imported here."""
    if importlib.util.find_spec("jobwatch_embedded") is None:
        return False
    import jobwatch_embedded

    return jobwatch_embedded.available()


def defaults() -> tuple[int | None, str | None]:
    """The server's defaults for ``--history-events`` and ``--replica-set``
    (None when it is not installed: the command then says how to install it)."""
    if importlib.util.find_spec("jobwatch_embedded") is None:
        return None, None
    import jobwatch_embedded

    return jobwatch_embedded.DEFAULT_HISTORY_EVENTS, jobwatch_embedded.DEFAULT_REPLICA_SET
