"""The exit codes of every ``jobwatch`` command: one small table scripts can trust.

=====  ==========================================================================
code   meaning
=====  ==========================================================================
0      ok
1      the check failed or there is something to report: ``status --check`` on a
       watcher that is not alive, a sweep that skipped jobs, ``jobs --stuck``
       that found some, ``explain`` of an id no job has, ``simulate --wait-s``
       whose jobs did not complete, an unexpected error (a bug: ``--debug``
       shows its traceback)
2      usage or configuration error (bad flag, bad setting, bad config file,
       the server refuses jobwatch as configured)
3      cannot reach or use the server
=====  ==========================================================================

Interrupted by Ctrl-C (SIGINT): 130, as shells do. Stopped by SIGTERM (the
orderly stop an orchestrator asks for): 0. See ``watcher.cli.interrupts``.
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
FAILED: Final = 1
USAGE: Final = 2
UNREACHABLE: Final = 3
INTERRUPTED: Final = 130

TABLE: Final = {
    OK: "ok",
    FAILED: "check failed or something to report (not alive, skipped or stuck jobs, unknown job id)",
    USAGE: "usage or configuration error",
    UNREACHABLE: "cannot reach or use the server",
}
