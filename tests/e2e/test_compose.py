"""compose/ and the Dockerfile: validated without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = sorted((ROOT / "compose").glob("*.yml"))


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose (the validator) is not installed; .ci/compose-check installs it",
)
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("profile", [[], ["--profile", "simulator"]], ids=["default", "simulator"])
def test_compose_file_is_valid(path: Path, profile: list[str]) -> None:
    done = subprocess.run(
        ["docker-compose", "-f", str(path), *profile, "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_compose_wires_a_replica_set_watcher_and_simulator() -> None:
    text = (ROOT / "compose" / "docker-compose.yml").read_text()
    assert "--replSet" in text and "rs.initiate" in text
    assert "condition: service_healthy" in text
    assert "'rs0'" in text and "replicaSet=rs0" in (ROOT / "compose" / "mongodb-uri.secret.example").read_text()
    assert 'profiles: ["simulator"]' in text and '"simulate"' in text
    assert '"127.0.0.1:9187:9187"' in text  # metrics published on loopback only


def test_compose_runs_two_watchers_sharing_one_name() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())["services"]
    watchers = {name: s for name, s in services.items() if s.get("command") == ["run"]}
    assert len(watchers) == 2  # a leader and a standby
    first, second = watchers.values()
    assert first["environment"] == second["environment"]
    assert "JOBWATCH_WATCHER_NAME" not in first["environment"]  # one name: the default
    assert "/readyz" in " ".join(second["healthcheck"]["test"]) and second["restart"] == "unless-stopped"
    host_ports = {p.split(":")[1] for w in watchers.values() for p in w["ports"]}
    assert host_ports == {"9187", "9188"}  # each its own host port


def test_dockerfile_runs_the_console_script_as_non_root_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["jobwatch"]' in text
    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert re.search(r"python:3\.13-slim@sha256:[0-9a-f]{64}", text)  # tag and digest
    assert "--require-hashes" in text and "deploy/requirements.lock" in text


def test_the_lock_file_pins_every_dependency_with_hashes() -> None:
    lock = (ROOT / "deploy" / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\$", lock, re.MULTILINE)
    names = {pin.lower().replace("_", "-") for pin in pins}
    assert {
        "pymongo",
        "anyio",
        "pydantic",
        "pydantic-settings",
        "loguru",
        "prometheus-client",
        "click",
        "setuptools",
    } <= names
    assert lock.count("--hash=sha256:") >= len(pins)


def test_compose_is_hardened() -> None:
    text = (ROOT / "compose" / "docker-compose.yml").read_text()
    assert not re.search(r"^version:", text, re.MULTILINE)  # obsolete key
    assert re.search(r"image: mongo:7@sha256:[0-9a-f]{64}", text)
    for needle in (
        "read_only: true",
        "cap_drop",
        "no-new-privileges",
        "mem_limit",
        "max-size",
        "JOBWATCH_URI_FILE",
        "restart: unless-stopped",
    ):
        assert needle in text, needle
    simulator = text.split("  simulator:")[1]
    assert "disable: true" in simulator  # not the watcher's /readyz
    watcher = text.split("  watcher:")[1].split("  simulator:")[0]
    assert "/readyz" in watcher


def test_the_image_installs_every_subpackage() -> None:
    # The image installs jobwatch non-editable: a package the build leaves out
    # (watcher.cli, say) only fails there, at start.
    import fnmatch
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("rules", "watcher")
        for path in (ROOT / top).rglob("__init__.py")
    ]
    assert "watcher.cli" in packages
    for package in packages:
        assert any(fnmatch.fnmatch(package, pattern) for pattern in include), package


def test_the_uri_secret_is_never_tracked_and_its_example_is() -> None:
    """The secret file may hold a real password: git ignores it; the example
    (the bundled MongoDB's URI) is what a fresh clone copies."""
    tracked = subprocess.run(["git", "ls-files", "compose"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert "compose/mongodb-uri.secret" not in tracked.stdout.split()
    assert "compose/mongodb-uri.secret.example" in tracked.stdout.split()
    ignored = subprocess.run(["git", "check-ignore", "-q", "compose/mongodb-uri.secret"], cwd=ROOT, timeout=60)
    assert ignored.returncode == 0, "compose/mongodb-uri.secret must be in .gitignore"
    example = (ROOT / "compose" / "mongodb-uri.secret.example").read_text().strip()
    assert example.startswith("mongodb://") and "@" not in example  # no credential in the example
    text = (ROOT / "compose" / "docker-compose.yml").read_text()
    assert "file: ./mongodb-uri.secret\n" in text
    assert "cp compose/mongodb-uri.secret.example compose/mongodb-uri.secret" in text
