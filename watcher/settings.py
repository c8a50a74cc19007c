"""The one settings object. Resolved once: flag > environment (JOBWATCH_*) >
config file (``--config`` / ``JOBWATCH_CONFIG``, TOML) > default.

Nothing else in jobwatch reads ``os.environ``.

    settings.load({"workers": 4}, config_file=Path("jobwatch.toml"))
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import json
import os
import re
import tomllib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from watcher.ops import redact

DEFAULT_URI = "mongodb://localhost:27017/?replicaSet=rs0"
ENV_PREFIX = "JOBWATCH_"
CONFIG_ENV = "JOBWATCH_CONFIG"
#: JOBWATCH_* variables that are not settings but are ours: the config file's
#: path, and the ./dev script's interpreter and environment.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")
NOT_SETTINGS = frozenset({CONFIG_ENV, "JOBWATCH_PYTHON", "JOBWATCH_VENV"})
#: What MongoDB refuses in a database name (on any platform it runs on).
_BAD_DATABASE_CHARS = frozenset('/\\. "$*<>:|?\x00')

#: The config file's values while ``load`` builds a Settings (lowest priority
#: above the defaults); empty for a plain ``Settings()``.
_file_values: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "jobwatch_config_file", default=types.MappingProxyType({})
)


class ConfigFileError(ValueError):
    """The config file cannot be read or is not TOML; the message names it."""


class Settings(BaseSettings):
    """Every knob of the watcher; docs/reference/settings.md is generated from these fields."""

    # allow_inf_nan=False: an infinite backoff, deadline or interval is a
    # watcher that waits forever, and NaN passes no bound check honestly.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True, allow_inf_nan=False
    )

    uri: SecretStr = Field(
        SecretStr(DEFAULT_URI), description="MongoDB connection string (replica set or sharded cluster)"
    )
    uri_file: Path | None = Field(
        None, description="read the connection string from this file (a mounted secret); excludes uri"
    )
    database: str = Field("imageviewer", min_length=1, description="database holding the jobs")
    jobs_collection: str = Field("background_jobs", min_length=1, description="collection of background jobs")
    collections_collection: str = Field(
        "collections", min_length=1, description="collection documents for path A counts"
    )
    positions_collection: str = Field(
        "jobwatch_positions", min_length=1, description="where resume positions, leases and heartbeats are kept"
    )
    watcher_name: str = Field(
        "default",
        min_length=1,
        description="instances sharing a name share its partitions (one leader each) and their positions",
    )
    partitions: Annotated[int, Field(ge=1, le=1024)] = Field(
        1,
        description="split the jobs into this many partitions by MongoDB's hash of _id, each with its own lease, "
        "stream and position, spread over the instances sharing the name (all of them must use the same value)",
    )
    lease_s: Annotated[float, Field(ge=1)] = Field(
        10.0,
        description="a partition's lease lasts this long on the server's clock: a crashed holder's partitions are "
        "taken over after it (plus renew_s)",
    )
    renew_s: Annotated[float, Field(gt=0)] = Field(
        2.0,
        description="how often leases are renewed and free ones tried (at most lease_s / 3); a holder that could "
        "not renew for 2/3 of lease_s stops by itself",
    )
    job_types: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="job types to watch, comma-separated; empty = every type"
    )
    stage_arrays: Annotated[dict[str, str], NoDecode] = Field(
        {"thumbnail": "thumbnails", "cache": "cacheImages"},
        description="stage name -> array field of the collection document counted by path A",
    )
    scan_stage: str = Field("scan", description="stage whose completion with 0 items means nothing to process")

    sweep_interval_s: Annotated[float, Field(gt=0)] = Field(300.0, description="seconds between periodic sweeps")
    full_sweep_every: Annotated[int, Field(ge=1)] = Field(
        12,
        description="every Nth periodic sweep also reads jobs whose status is missing or unknown "
        "(start-up and catch-up sweeps always do)",
    )
    path_a_quiet_s: Annotated[float, Field(ge=0)] = Field(
        60.0,
        description="path A raises a stage's counter only after it and the collection's count stood still this long "
        "(a consumer between its push and its $inc is never counted twice)",
    )
    sweep_batch_size: Annotated[int, Field(ge=1, le=10_000)] = Field(500, description="jobs read per sweep batch")
    create_index: bool = Field(True, description="create the sweep's index on (status, jobType) if absent")
    workers: Annotated[int, Field(ge=1, le=256)] = Field(8, description="jobs evaluated and written concurrently")
    max_pending_jobs: Annotated[int, Field(ge=1)] = Field(
        10_000, description="jobs waiting for evaluation before the stream stops reading (back-pressure)"
    )
    progress_interval_s: Annotated[float, Field(ge=0)] = Field(
        1.0, description="minimum seconds between progress-only writes to one job (completions are never delayed)"
    )
    progress_write_share: Annotated[float, Field(ge=0, le=1)] = Field(
        0.09,
        description="progress-only writes across all jobs stay at most this share of the change events seen, plus a "
        "burst of 10 (the watcher's own writes count as events: 0.09 keeps them under 10 % of the consumers' "
        "increments); a held-back write is made once its job has been quiet for progress_interval_s",
    )
    census_interval_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="seconds between job counts for the metrics (open, done-but-open, oldest open)"
    )
    position_save_interval_s: Annotated[float, Field(gt=0)] = Field(5.0, description="seconds between position saves")
    max_await_ms: Annotated[int, Field(ge=10, le=60_000)] = Field(1000, description="change stream getMore wait")
    backoff_base_s: Annotated[float, Field(gt=0)] = Field(0.5, description="first retry delay after a stream error")
    max_backoff_s: Annotated[float, Field(gt=0)] = Field(30.0, description="cap on retry delays")
    degraded_sweep_interval_s: Annotated[float, Field(gt=0)] = Field(
        10.0, description="sweep interval when change streams are unavailable and allow_degraded is set"
    )
    allow_degraded: bool = Field(
        False, description="on a standalone server, sweep every degraded_sweep_interval_s instead of failing"
    )
    # The driver refuses a billion ms or more; said here, it names the setting, not the URI.
    server_selection_timeout_ms: Annotated[int, Field(ge=100, lt=1_000_000_000)] = Field(
        10_000, description="how long to look for a server before saying it is unreachable"
    )
    shutdown_deadline_s: Annotated[float, Field(gt=0)] = Field(
        10.0, description="bound on draining and saving at shutdown"
    )

    health_host: str = Field("127.0.0.1", description="health/metrics HTTP bind address")
    health_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9187, description="health/metrics port; 0 disables the endpoint"
    )
    log_json: bool = Field(False, description="JSON log lines instead of readable ones")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    observe: bool = Field(
        False, description="compute and log every decision and expose metrics, but write nothing to the jobs"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order is precedence: flags (init) > environment > config file > defaults.
        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=dict(_file_values.get()))

    @model_validator(mode="before")
    @classmethod
    def _uri_from_file(cls, data: Any) -> Any:
        # Before field validation, so the file's URI is checked like any other.
        if not isinstance(data, dict) or not data.get("uri_file"):
            return data
        if data.get("uri") is not None:
            raise ValueError("--uri-file / JOBWATCH_URI_FILE: set either the URI or the URI file, not both")
        path = Path(str(data["uri_file"]))
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"--uri-file / JOBWATCH_URI_FILE: cannot read {path}: {reason}") from None
        if not text:
            raise ValueError(f"--uri-file / JOBWATCH_URI_FILE: {path} is empty")
        return {**data, "uri": text}

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: SecretStr) -> SecretStr:
        # The value is never echoed: whatever its shape, it may hold a password.
        text = value.get_secret_value()
        if not text.startswith(("mongodb://", "mongodb+srv://")):
            scheme = text.split("://", 1)[0] if "://" in text else ""
            found = f"it starts with {scheme}://" if _SCHEME.fullmatch(scheme) else "it has no scheme"
            raise ValueError(f"must start with mongodb:// or mongodb+srv:// ({found})")
        if not text.split("://", 1)[1].rpartition("@")[2].split("/", 1)[0].split("?", 1)[0]:
            raise ValueError("names no host (expected mongodb://host[:port][,host...]/...)")
        return value

    @field_validator("database")
    @classmethod
    def _database_name(cls, value: str) -> str:
        # What MongoDB refuses as a database name; said here, before any connection.
        bad = sorted(set(value) & _BAD_DATABASE_CHARS)
        if bad:
            raise ValueError(f"a MongoDB database name cannot contain {' '.join(repr(c) for c in bad)}")
        if len(value.encode("utf-8")) >= 64:
            raise ValueError("a MongoDB database name must be shorter than 64 bytes")
        return value

    @field_validator("jobs_collection", "collections_collection", "positions_collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        if "$" in value or "\x00" in value:
            raise ValueError("a MongoDB collection name cannot contain '$' or NUL")
        if value.startswith("system."):
            raise ValueError("'system.' collections are MongoDB's own")
        return value

    @field_validator("stage_arrays", mode="before")
    @classmethod
    def _stage_arrays_json(cls, value: Any) -> Any:
        if isinstance(value, str):  # JOBWATCH_STAGE_ARRAYS='{"thumbnail": "thumbnails"}'
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(
                    f'not JSON ({exc}); expected an object such as {{"thumbnail": "thumbnails"}}'
                ) from None
        return value

    @field_validator("stage_arrays")
    @classmethod
    def _stage_arrays_names(cls, value: dict[str, str]) -> dict[str, str]:
        # Each array name becomes "$<name>" in path A's aggregation: it must be a field path.
        for stage, field in value.items():
            if not stage:
                raise ValueError("a stage name cannot be empty")
            if not field or field.startswith("$") or "\x00" in field or "" in field.split("."):
                raise ValueError(f"stage {stage!r}: {field!r} is not a field name")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("job_types", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # JOBWATCH_JOB_TYPES=collection-scan,resume-collection (or a JSON list)
            if value.strip().startswith("["):
                return json.loads(value)
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> Settings:
        if self.max_backoff_s < self.backoff_base_s:
            raise ValueError("max_backoff_s must be at least backoff_base_s")
        return self

    @model_validator(mode="after")
    def _lease_timing(self) -> Settings:
        # A holder stops at 2/3 of its lease without a renewal: at least two
        # renewals must fit before that, or one slow reply costs the lease.
        if self.renew_s * 3 > self.lease_s:
            raise ValueError(
                f"--renew-s / JOBWATCH_RENEW_S ({self.renew_s:g}) must be at most --lease-s / JOBWATCH_LEASE_S "
                f"divided by 3 ({self.lease_s / 3:g}): raise the lease or renew more often"
            )
        return self

    @property
    def uri_value(self) -> str:
        return self.uri.get_secret_value()

    @property
    def uri_redacted(self) -> str:
        return redact.uri(self.uri_value)


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML file's top-level keys, named like the settings (``workers = 4``)."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigFileError(f"--config / {CONFIG_ENV}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"--config / {CONFIG_ENV}: {path} is not valid TOML: {exc}") from None


def config_path(flag: Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """``--config`` wins over ``JOBWATCH_CONFIG``."""
    if flag is not None:
        return flag
    value = (os.environ if environ is None else environ).get(CONFIG_ENV)
    return Path(value) if value else None


@contextlib.contextmanager
def _config_values(values: Mapping[str, Any]) -> Iterator[None]:
    token = _file_values.set(values)
    try:
        yield
    finally:
        _file_values.reset(token)


def load(flags: Mapping[str, Any], *, config_file: Path | None = None) -> Settings:
    """Settings from flags (only those given), the environment, the config
    file (``config_file`` or ``JOBWATCH_CONFIG``) and the defaults, in that
    order. Raises ``ConfigFileError`` or pydantic's ``ValidationError``."""
    path = config_path(config_file)
    values = read_config_file(path) if path is not None else {}
    with _config_values(values):
        return Settings(**flags)


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``JOBWATCH_*`` variable that is no setting (a typo is
    otherwise silently ignored), with the closest setting's name when any."""
    env = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | NOT_SETTINGS
    lines = []
    for name in sorted(env):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            lines.append(f"{name} is not a jobwatch setting{hint}; ignored")
    return lines
