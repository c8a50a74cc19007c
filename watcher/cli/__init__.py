"""The ``jobwatch`` command: parsing, commands, exit codes, demo and simulator."""

import sys


def entry() -> None:
    """The console script (and ``python -m watcher``). Its first instruction
    installs jobwatch's SIGINT and SIGTERM handlers, before the imports that
    take a few hundred milliseconds: jobwatch is PID 1 in a container, where a
    signal that finds no handler is dropped."""
    from watcher.cli import interrupts

    interrupts.install()
    try:
        from watcher.cli import main
    except interrupts.Interrupted as exc:  # during those imports: nothing to stop yet
        print(f"jobwatch: interrupted by {exc} while starting", file=sys.stderr, flush=True)
        sys.exit(interrupts.exit_code(exc.signum))
    main.entry()
