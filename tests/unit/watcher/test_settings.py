from __future__ import annotations

import pytest
from pydantic import ValidationError

from watcher.ops import redact
from watcher.settings import Settings


def test_defaults_watch_every_job_type() -> None:
    settings = Settings()
    assert settings.job_types == ()
    assert settings.stage_arrays == {"thumbnail": "thumbnails", "cache": "cacheImages"}
    assert settings.health_host == "127.0.0.1"


@pytest.mark.parametrize("raw", ["collection-scan, resume-collection", '["collection-scan", "resume-collection"]'])
def test_job_types_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("JOBWATCH_JOB_TYPES", raw)
    assert Settings().job_types == ("collection-scan", "resume-collection")


def test_stage_arrays_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBWATCH_STAGE_ARRAYS", '{"thumbnail": "thumbs"}')
    assert Settings().stage_arrays == {"thumbnail": "thumbs"}


def test_unknown_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Settings(sweep_intervall_s=3)  # type: ignore[call-arg]


def test_backoff_order_is_checked() -> None:
    with pytest.raises(ValidationError, match="max_backoff_s"):
        Settings(backoff_base_s=5, max_backoff_s=1)


def test_uri_is_secret_and_redacted() -> None:
    settings = Settings(uri="mongodb://ops:pa55word@db1,db2/?replicaSet=rs0&authSource=admin")
    assert "pa55word" not in repr(settings) and "pa55word" not in str(settings.model_dump())
    assert settings.uri_redacted == "mongodb://***@db1,db2/?replicaSet=rs0&authSource=admin"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("mongodb+srv://u:p%40ss@cluster0.example.net/db", "p%40ss"),
        ("failed: mongodb://admin:hunter22@h:27017 timed out", "hunter22"),
        ("mongodb://h/?authMechanism=PLAIN&password=xyz123", "xyz123"),
    ],
)
def test_redaction(text: str, hidden: str) -> None:
    assert hidden not in redact.uri(text)


def test_redactor_hides_known_secrets_anywhere() -> None:
    redactor = redact.Redactor()
    for secret in redact.secrets_in("mongodb://ops:p%40ssword1@db/"):
        redactor.add(secret)
    assert "p@ssword1" not in redactor("auth failed for password p@ssword1")
