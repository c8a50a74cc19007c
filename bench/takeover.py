"""Takeover: how long partitions go without a leader when the leader dies (kill -9) or stops (SIGTERM).

Two ``jobwatch run`` processes on one ``jobwatch embedded-server`` (or
``MONGODB_URI``), the product's defaults (``lease_s`` 10, ``renew_s`` 2)
unless told otherwise. Each trial: a burst of consumer increments; the leader
gets the signal mid-burst; a fresh standby starts at once (so two always
run). Measured: from the signal to the new leader's ``stream_opened`` log
line (one host, one clock). Each trial also checks what the test suite
checks (``tests/support/replicas.py``): every job Completed with
``completedAt`` written once, nothing going back, the term one more.

    ./dev bench takeover                    # 20 trials each
    ./dev bench takeover --trials 5 --lease-s 4 --renew-s 1

Writes ``bench/results/takeover.json`` and the table in
``docs/how-to/run-several.md`` between its ``takeover`` markers (a unit
test checks the page matches the file).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

DOCS_PAGE = common.ROOT / "docs" / "how-to" / "run-several.md"
START = "<!-- takeover:start (bench/takeover.py writes this table from bench/results/takeover.json) -->"
END = "<!-- takeover:end -->"
DATABASE = "bench_takeover"


def summary(seconds: list[float], target_s: float) -> dict[str, Any]:
    return {
        "trials": len(seconds),
        "p50_s": round(common.quantile(seconds, 0.5), 2),
        "max_s": round(max(seconds), 2),
        "min_s": round(min(seconds), 2),
        "target_s": target_s,
        "within_target": sum(s <= target_s for s in seconds),
        "all_s": [round(s, 3) for s in seconds],
    }


def markdown(doc: dict[str, Any]) -> str:
    """The docs' table, from a results document."""
    figures, parameters, machine = doc["figures"], doc["parameters"], doc["machine"]
    rows = [
        "| stop | trials | p50 | max | target | within target |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, target in (
        ("kill_9", "`kill -9` of the leader", "lease_s + renew_s + 1 s"),
        ("sigterm", "SIGTERM of the leader", "renew_s + 1 s"),
    ):
        f = figures[key]
        figures_cells = f"{f['trials']} | {f['p50_s']:.2f} s | {f['max_s']:.2f} s"
        target_cells = f"{target} = {f['target_s']:g} s | {f['within_target']} of {f['trials']}"
        rows.append(f"| {label} | {figures_cells} | {target_cells} |")
    return "\n".join(
        [
            START,
            f"`lease_s` {parameters['lease_s']:g} s, `renew_s` {parameters['renew_s']:g} s; "
            f"{doc['backend']['kind']} backend; {machine['cpu_count']} CPUs, load average {machine['load_avg_1m']} "
            f"at the end; {doc['finished_at']}, commit "
            f"`{str(machine.get('git_commit') or '?')[:7]}`; `{doc['command']}`.",
            "",
            *rows,
            END,
        ]
    )


def headline(doc: dict[str, Any]) -> str:
    """One line of figures for the project's front page, from a results document
    (a test there checks the line matches the committed results)."""
    kill, term = doc["figures"]["kill_9"], doc["figures"]["sigterm"]
    return (
        f"Takeover measured here (`bench/results/takeover.json`, {kill['trials']} trials each): `kill -9` of the "
        f"leader p50 {kill['p50_s']:.2f} s, max {kill['max_s']:.2f} s; SIGTERM p50 {term['p50_s']:.2f} s, "
        f"max {term['max_s']:.2f} s."
    )


def write_docs(doc: dict[str, Any]) -> None:
    text = DOCS_PAGE.read_text()
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    DOCS_PAGE.write_text(before + markdown(doc) + after)
    print(headline(doc))


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument("--trials", type=int, default=20, help="trials per signal (default 20)")
    p.add_argument("--lease-s", type=float, default=10.0)
    p.add_argument("--renew-s", type=float, default=2.0)
    args = p.parse_args()
    from tests.support.documents import fresh_job
    from tests.support.replicas import takeover_trials
    from tests.support.served import embedded_server

    settings = {"lease_s": args.lease_s, "renew_s": args.renew_s}
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        for key, signum, target_s in (
            ("kill_9", signal.SIGKILL, args.lease_s + args.renew_s + 1),
            ("sigterm", signal.SIGTERM, args.renew_s + 1),
        ):
            uri = common.mongodb_uri()
            directory = Path(work) / key
            directory.mkdir()
            print(
                f"takeover: {args.trials} trials of {key} (lease_s {args.lease_s:g}, renew_s {args.renew_s:g})",
                flush=True,
            )
            with contextlib.ExitStack() as stack:
                # A server of its own per kind of stop (embedded), or the given one's database per kind.
                target = uri if uri is not None else stack.enter_context(embedded_server()).uri
                trials = takeover_trials(
                    target,
                    DATABASE if uri is None else f"{DATABASE}_{key}",
                    directory,
                    trials=args.trials,
                    signum=signum,
                    settings=settings,
                    new_job=lambda: fresh_job(4),
                )
            figures[key] = summary([t.takeover_s for t in trials], target_s)
    common.table(
        ["stop", "trials", "p50 s", "max s", "min s", "target s", "within target"],
        [
            [k, f["trials"], f["p50_s"], f["max_s"], f["min_s"], f["target_s"], f["within_target"]]
            for k, f in figures.items()
        ],
        title="takeover: from the signal to the new leader's stream opening",
    )
    parameters = {"trials": args.trials, "lease_s": args.lease_s, "renew_s": args.renew_s}
    path = common.save(
        common.result_name("takeover", args),
        parameters=parameters,
        figures=figures,
        backend_info=common.backend("separate-process"),
        save_file=not args.no_save,
    )
    if path is not None and not args.tag:
        import json

        write_docs(json.loads(path.read_text()))
        print(f"wrote {path.relative_to(common.ROOT)} and the table in {DOCS_PAGE.relative_to(common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
