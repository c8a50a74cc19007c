"""The benchmarks page is written from the results files, never by hand:
it must be what ``bench/report.py`` writes from the committed results."""

from __future__ import annotations

from bench import report


def test_the_benchmarks_page_is_what_the_results_files_say() -> None:
    assert report.PAGE.read_text() == report.render(), (
        "docs/benchmarks/index.md is out of date with bench/results: run ./dev bench report"
    )


def test_the_plots_on_the_page_are_the_results_plots() -> None:
    for name in report.PLOTS:
        path = report.results_path(name)
        if path is None or not path.with_suffix(".png").exists():
            continue
        assert (report.PAGE.parent / f"{name}.png").read_bytes() == path.with_suffix(".png").read_bytes(), (
            f"run ./dev bench report ({name}.png)"
        )


def test_no_word_about_what_is_gone() -> None:
    """Docstrings that drifted once: the sweep's index is a plain one, and the
    replayed copy of the dispatcher is gone (the benchmarks drive the product)."""
    folders = ("bench", "docs", "watcher")
    texts = {
        path: path.read_text()
        for folder in folders
        for path in (report.ROOT / folder).rglob("*")
        if path.suffix in (".py", ".md")
    }
    for path, text in texts.items():
        for gone in ("partial index", "replay.py", "profile_async"):
            assert gone not in text, f"{path.relative_to(report.ROOT)} still mentions {gone!r}"
