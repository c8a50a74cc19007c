"""The docs stay true to the code: the generated reference pages are up to
date, they list every setting, metric and exit code, and no page or
docstring points at a file that is not there (or outside the repository)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from watcher.cli import exits
from watcher.ops.metrics import Metrics
from watcher.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
#: Hand-written markdown outside docs/ that the site includes or the repository shows.
FRONT = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "CONTRIBUTING.md", ROOT / "embedded" / "README.md"]
#: Top-level folders whose files the docs name (a path in backticks starting with one of them).
REPO_DIRS = ("rules", "watcher", "embedded", "tests", "bench", "deploy", "compose", "docs", ".ci", ".github")


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jobwatch_docs_gen", DOCS / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _gen()


@pytest.mark.parametrize("page", sorted(GEN.PAGES))
def test_every_generated_page_is_up_to_date_with_the_code(page: str) -> None:
    committed = (DOCS / page).read_text()
    assert GEN.render(page, committed) == committed, f"docs/{page} is out of date with the code: run ./dev docs gen"


def test_a_page_whose_block_drifted_is_reported_stale_then_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reference").mkdir()
    for page in GEN.PAGES:
        (tmp_path / page).write_text((DOCS / page).read_text())
    drifted = "reference/exit-codes.md"
    (tmp_path / drifted).write_text((DOCS / drifted).read_text().replace("| 130 |", "| 131 |"))
    monkeypatch.setattr(GEN, "DOCS", tmp_path)
    assert GEN.stale() == [drifted]
    assert GEN.main(["--check"]) == 1
    assert GEN.main([]) == 0
    assert (tmp_path / drifted).read_text() == (DOCS / drifted).read_text()
    assert GEN.stale() == []


def test_the_settings_page_lists_every_setting_with_flag_and_variable() -> None:
    page = (DOCS / "reference" / "settings.md").read_text()
    for name, field in Settings.model_fields.items():
        row = next((line for line in page.splitlines() if f'<a id="{name}"></a>' in line), "")
        assert f"`--{name.replace('_', '-')}`" in row and f"`JOBWATCH_{name.upper()}`" in row, name
        assert field.description and field.description in row, name


def test_the_metrics_page_lists_every_metric_family() -> None:
    page = (DOCS / "reference" / "metrics.md").read_text()
    families = {name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for name in Metrics().names()}
    for name in families:
        assert f"| `{name}` |" in page, f"the metrics reference lacks {name}"


def test_the_exit_code_page_lists_every_code_of_the_cli() -> None:
    page = (DOCS / "reference" / "exit-codes.md").read_text()
    codes = {value for name, value in vars(exits).items() if name.isupper() and isinstance(value, int)}
    assert codes == set(exits.TABLE)
    for code in codes:
        assert f"\n| {code} | " in page, f"the exit-code reference lacks {code}"


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert f" {page.relative_to(DOCS).as_posix()}" in nav, f"{page.relative_to(ROOT)} is not in mkdocs.yml's nav"


def _named_paths(text: str) -> set[str]:
    """Repository paths a page names in backticks (`watcher/settings.py`,
    `tests/unit/test_x.py::test_y`), without the test selector."""
    found = set()
    for span in re.findall(r"`([^`\s]+)`", text):
        path = span.split("::")[0].rstrip("/.,")
        if path.startswith(REPO_DIRS) and "/" in path and not any(c in path for c in "*<>{}$"):
            found.add(path)
    return found


def _in_repository(path: str) -> bool:
    """The path is tracked, or it is a file each user makes from its tracked
    ``.example`` (a secret such as compose/mongodb-uri.secret)."""
    return (ROOT / path).exists() or (ROOT / f"{path}.example").exists()


@pytest.mark.parametrize("page", [*PAGES, *FRONT], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_page_names_exists(page: Path) -> None:
    """Links between docs pages are checked by ``mkdocs build --strict``
    (.ci/run); this checks what the build cannot: the paths a page names in
    backticks, and the links of the markdown outside docs/."""
    text = page.read_text()
    missing = sorted(path for path in _named_paths(text) if not _in_repository(path))
    assert not missing, f"{page.relative_to(ROOT)} names paths that are not in the repository: {missing}"
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        assert "://" not in target, f"{page.relative_to(ROOT)} links outside the repository: {target}"
        if page in FRONT and not target.startswith("#"):
            resolved = (page.parent / target.split("#")[0]).resolve()
            where = page.relative_to(ROOT)
            assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{where}: broken link {target}"


def test_the_path_check_sees_a_moved_file() -> None:
    assert _named_paths("`watcher/intake/settle.py` and `tests/unit/x.py::test_y`, `DIR/engine.sqlite`") == {
        "watcher/intake/settle.py",
        "tests/unit/x.py",
    }
    assert not (ROOT / "watcher/intake/settle.py").exists()


#: Code whose docstrings and messages may cite documentation (the README's own tests aside).
SOURCES = [
    path
    for folder in ("rules", "watcher", "embedded", "bench", "tests")
    for path in (ROOT / folder).rglob("*.py")
    if path.name not in ("test_readme.py", "test_docs.py")
]


#: A repository path in code: a top-level folder, then more (not a URL's path).
CODE_PATH = re.compile(r"(?<![\w/.:-])((?:rules|watcher|embedded|tests|bench|deploy|compose|docs)/[\w./-]*\w)")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_names_files_and_pages_that_exist(source: Path) -> None:
    """Docstrings and messages that cite documentation name the docs page
    (the README is the front door only), and every repository path the code
    names (``watcher/storage/errors.py``, ``tests/support/backends``) is there:
    a moved file leaves no stale pointer behind."""
    text = source.read_text()
    assert "README" not in text, f"{source.relative_to(ROOT)} cites the README for what lives in docs/: name the page"
    for path in CODE_PATH.findall(text):
        assert any(_in_repository(candidate) for candidate in (path, f"{path}.py")), (
            f"{source.relative_to(ROOT)} names {path}, which is not in the repository"
        )


def test_the_code_path_check_ignores_urls_and_sees_moved_files() -> None:
    text = "see https://example.org/docs/manual/x and ``watcher/intake/settle.py``, tests/support/backends"
    assert CODE_PATH.findall(text) == ["watcher/intake/settle.py", "tests/support/backends"]


#: Every page a reader sees: the site's pages and the markdown it includes or the repository shows.
READ = [*PAGES, *FRONT]
#: Names that look like ours but are examples of what jobwatch warns about (the settings page shows them).
UNKNOWN_VARIABLE_EXAMPLES = {"JOBWATCH_SERVICE_HOST", "JOBWATCH_SWEEP_INTERVAL", "JOBWATCH_X"}


def _mentioned(pattern: str) -> dict[str, set[str]]:
    """name -> the pages that mention it."""
    found: dict[str, set[str]] = {}
    for page in READ:
        for name in re.findall(pattern, page.read_text()):
            found.setdefault(name, set()).add(str(page.relative_to(ROOT)))
    return found


def test_the_docs_name_only_metrics_the_watcher_exports() -> None:
    from watcher.storage import store

    not_metrics = {Settings.model_fields["positions_collection"].default, store.SWEEP_INDEX, "jobwatch_embedded"}
    series = Metrics().names()
    families = {name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for name in series}
    known = series | families | not_metrics
    unknown = {name: pages for name, pages in _mentioned(r"\bjobwatch_\w+").items() if name not in known}
    assert not unknown, f"no such metric: {unknown}"


def test_the_docs_name_only_variables_jobwatch_reads() -> None:
    from watcher import settings as settings_module

    knobs = {name for path in (ROOT / "tests").rglob("*.py") for name in re.findall(r"JOBWATCH_\w+", path.read_text())}
    known = {f"JOBWATCH_{name.upper()}" for name in Settings.model_fields} | settings_module.NOT_SETTINGS
    unknown = {
        name: pages
        for name, pages in _mentioned(r"\bJOBWATCH_[A-Z0-9_]*[A-Z0-9]").items()
        if name not in known | knobs | UNKNOWN_VARIABLE_EXAMPLES
    }
    assert not unknown, f"no such setting or variable: {unknown}"


def test_the_docs_name_only_alerts_that_ship() -> None:
    import yaml

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    unknown = {name: pages for name, pages in _mentioned(r"\bJobwatch[A-Z]\w+").items() if name not in alerts}
    assert not unknown, f"no such alert in deploy/prometheus/alerts.yml: {unknown}"
