"""The one settings object. Resolved once: flag > environment (JOBWATCH_*) > default.

Nothing else in jobwatch reads ``os.environ``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from watcher.ops import redact

DEFAULT_URI = "mongodb://localhost:27017/?replicaSet=rs0"


class Settings(BaseSettings):
    """Every knob of the watcher. The README's configuration table lists them."""

    model_config = SettingsConfigDict(env_prefix="JOBWATCH_", extra="forbid", validate_default=True, frozen=True)

    uri: SecretStr = Field(SecretStr(DEFAULT_URI), description="MongoDB connection string (replica set or sharded cluster)")
    database: str = Field("imageviewer", min_length=1, description="database holding the jobs")
    jobs_collection: str = Field("background_jobs", min_length=1, description="collection of background jobs")
    collections_collection: str = Field("collections", min_length=1, description="collection documents for path A counts")
    positions_collection: str = Field("jobwatch_positions", min_length=1, description="where resume tokens and heartbeats are saved")
    watcher_name: str = Field("default", min_length=1, description="one saved position per name; replicas share a name")
    job_types: Annotated[tuple[str, ...], NoDecode] = Field((), description="job types to watch, comma-separated; empty = every type")
    stage_arrays: dict[str, str] = Field(
        {"thumbnail": "thumbnails", "cache": "cacheImages"},
        description="stage name -> array field of the collection document counted by path A",
    )
    scan_stage: str = Field("scan", description="stage whose completion with 0 items means nothing to process")

    sweep_interval_s: Annotated[float, Field(gt=0)] = Field(300.0, description="seconds between full sweeps")
    full_sweep_every: Annotated[int, Field(ge=1)] = Field(
        12, description="every Nth periodic sweep also scans jobs whose status is missing or unknown (unindexed)"
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
    position_save_interval_s: Annotated[float, Field(gt=0)] = Field(5.0, description="seconds between position saves")
    max_await_ms: Annotated[int, Field(ge=10, le=60_000)] = Field(1000, description="change stream getMore wait")
    backoff_base_s: Annotated[float, Field(gt=0)] = Field(0.5, description="first retry delay after a stream error")
    max_backoff_s: Annotated[float, Field(gt=0)] = Field(30.0, description="cap on retry delays")
    degraded_sweep_interval_s: Annotated[float, Field(gt=0)] = Field(
        10.0, description="sweep interval when change streams are unavailable and allow_degraded is set"
    )
    allow_degraded: bool = Field(False, description="on a standalone server, sweep every degraded_sweep_interval_s instead of failing")
    server_selection_timeout_ms: Annotated[int, Field(ge=100)] = Field(
        10_000, description="how long to look for a server before saying it is unreachable"
    )
    shutdown_deadline_s: Annotated[float, Field(gt=0)] = Field(10.0, description="bound on draining and saving at shutdown")

    health_host: str = Field("127.0.0.1", description="health/metrics HTTP bind address")
    health_port: Annotated[int, Field(ge=0, le=65535)] = Field(9187, description="health/metrics port; 0 disables the endpoint")
    log_json: bool = Field(False, description="JSON log lines instead of readable ones")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"must start with mongodb:// or mongodb+srv:// (got {redact.uri(value.get_secret_value())!r})")
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

    @property
    def uri_value(self) -> str:
        return self.uri.get_secret_value()

    @property
    def uri_redacted(self) -> str:
        return redact.uri(self.uri_value)
