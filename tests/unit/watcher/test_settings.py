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


def test_leases_default_to_client_gos_shape_and_renew_well_inside_the_lease() -> None:
    settings = Settings()
    assert (settings.partitions, settings.lease_s, settings.renew_s) == (1, 10.0, 2.0)
    assert Settings(lease_s=3, renew_s=1).renew_s == 1  # exactly a third
    with pytest.raises(ValidationError, match="--renew-s / JOBWATCH_RENEW_S .2. must be at most --lease-s"):
        Settings(lease_s=3, renew_s=2)
    for bad in ({"lease_s": 0.5, "renew_s": 0.1}, {"renew_s": 0}, {"partitions": 0}, {"partitions": 2000}):
        with pytest.raises(ValidationError):
            Settings(**bad)


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


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("mongodb://ops:pa@ss22@db/", "pa@ss22"),  # unescaped @
        ("mongodb://ops:pa/ss22@db/", "pa/ss22"),  # unescaped /
        ("ops:pass22word@db1", "pass22word"),  # no scheme
        ("mongodb://db/?authMechanism=PLAIN&password=pass22word", "pass22word"),
    ],
)
def test_secrets_in_any_uri_shape_are_found_and_hidden(text: str, hidden: str) -> None:
    redactor = redact.Redactor()
    for secret in redact.secrets_in(text):
        redactor.add(secret)
    assert hidden not in redactor(f"error talking to {text}: {hidden} refused")


def test_unknown_environment_names_the_closest_setting() -> None:
    from watcher import settings as settings_module

    env = {
        "JOBWATCH_WORKER": "3",
        "JOBWATCH_WORKERS": "3",
        "JOBWATCH_CONFIG": "x.toml",
        "JOBWATCH_VENV": ".venv",
        "PATH": "/bin",
    }
    assert settings_module.unknown_environment(env) == [
        "JOBWATCH_WORKER is not a jobwatch setting (did you mean JOBWATCH_WORKERS?); ignored"
    ]


@pytest.mark.parametrize(
    ("uri", "message"),
    [("db1:27017", "no scheme"), ("http://db1/", "starts with http://"), ("mongodb://", "names no host")],
)
def test_bad_uris_are_refused_without_echoing_them(uri: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(uri=uri)
    text = str(caught.value.errors(include_input=False)[0]["msg"])
    assert message in text and (uri not in text or uri == "mongodb://")  # the bare scheme is no secret
