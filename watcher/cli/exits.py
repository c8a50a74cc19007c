"""The exit codes of every ``jobwatch`` command: one small table scripts can trust."""

from __future__ import annotations

OK = 0  #: done
FAILED = 1  #: the check failed, or there is something to report
USAGE = 2  #: usage or configuration error
UNREACHABLE = 3  #: cannot reach or use the server
NOT_FOUND = 4  #: the job asked for does not exist
