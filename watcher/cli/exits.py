"""The exit codes of every ``jobwatch`` command: one small table scripts can trust.

``TABLE`` is the table; docs/reference/exit-codes.md is generated from it
(``./dev docs gen``). Interrupted by Ctrl-C (SIGINT): 130, as shells do.
Stopped by SIGTERM (the orderly stop an orchestrator asks for): 0. See
``watcher.cli.interrupts``.
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
    FAILED: "the check failed or there is something to report: `status --check` when a partition has no live holder, "
    "a sweep that skipped jobs, `jobs --stuck` that found some, `explain` of an id no job has, "
    "`simulate --wait-s` whose jobs did not all complete; also an unexpected error (a bug: rerun with `--debug` "
    "and report the traceback)",
    USAGE: "usage or configuration error: unknown flag, bad setting value (named as flag and variable, never "
    "echoed), bad config file, bad URI, the server refuses jobwatch as configured (standalone without "
    "`allow_degraded`, authentication, missing privileges, `partitions` > 1 without `$toHashedIndexKey`), health port "
    "in use, a live instance of the watcher name runs with other `partitions` or `job_types`, `position reset` while "
    "an instance of the name runs (without `--force`)",
    UNREACHABLE: "cannot reach or use the server; the message names the cause (connection refused, DNS, replica set "
    "name mismatch, TLS, no answer within `server_selection_timeout_ms`, no primary, what the server said)",
    INTERRUPTED: "interrupted by SIGINT (Ctrl-C), after an orderly stop; SIGTERM, the orderly stop an orchestrator "
    "asks for, exits 0; a second signal forces the exit at once with 128 + its number (130, 143)",
}
