"""Settings, read once at the edge (CLI, ``cmdlog up``, flow entry) from a mapping and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from commandlog.errors import ConfigurationError

DEFAULT_APPS = ("examples.billing",)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable, with zero-config defaults (embedded Postgres, lake under ``CMDLOG_HOME``)."""

    home: Path = Path(".cmdlog")
    """``CMDLOG_HOME``: where the embedded Postgres data, the lake and runtime files live."""
    database_url: str | None = None
    """``CMDLOG_DATABASE_URL``: an existing Postgres; None starts the embedded server under ``home/pg``."""
    lake_uri: str | None = None
    """``CMDLOG_LAKE_URI``: lake root (folder or pyarrow filesystem URI); None means ``home/lake``."""
    replica_url: str | None = None
    """``CMDLOG_REPLICA_URL``: a streaming hot standby of the database for journal timelines and export reads
    (``storage.replica``); None reads the primary."""
    replica_max_lag_s: float = 30.0
    """``CMDLOG_REPLICA_MAX_LAG``: seconds; a standby further behind is not read (the primary is, with a warning)."""
    stats_timeout_s: float = 10.0
    """``CMDLOG_STATS_TIMEOUT``: seconds each Postgres statement of ``GET /api/journal/stats`` may run
    (``statement_timeout``); past it the request is answered 503."""
    max_body_bytes: int = 256 * 1024
    """``CMDLOG_MAX_BODY_BYTES``: a larger command body is rejected."""
    apps: tuple[str, ...] = DEFAULT_APPS
    """``CMDLOG_APPS``: comma-separated modules whose ``setup(bus)`` registers commands and handlers."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Every ``CMDLOG_*`` variable, for settings other modules read."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from a mapping (``os.environ`` by default); bad values raise ``ConfigurationError``."""
        env = os.environ if env is None else env
        try:
            max_body = int(env.get("CMDLOG_MAX_BODY_BYTES", 256 * 1024))
        except ValueError:
            raise ConfigurationError("CMDLOG_MAX_BODY_BYTES must be an integer number of bytes") from None
        if max_body <= 0:
            raise ConfigurationError("CMDLOG_MAX_BODY_BYTES must be positive")
        try:
            max_lag = float(env.get("CMDLOG_REPLICA_MAX_LAG", 30))
        except ValueError:
            raise ConfigurationError("CMDLOG_REPLICA_MAX_LAG must be a number of seconds") from None
        if not 0 < max_lag < float("inf"):
            raise ConfigurationError("CMDLOG_REPLICA_MAX_LAG must be a positive number of seconds")
        try:
            stats_timeout = float(env.get("CMDLOG_STATS_TIMEOUT", 10))
        except ValueError:
            raise ConfigurationError("CMDLOG_STATS_TIMEOUT must be a number of seconds") from None
        if not 0 < stats_timeout < float("inf"):
            raise ConfigurationError("CMDLOG_STATS_TIMEOUT must be a positive number of seconds")
        apps = tuple(a.strip() for a in env.get("CMDLOG_APPS", ",".join(DEFAULT_APPS)).split(",") if a.strip())
        return cls(
            home=Path(env.get("CMDLOG_HOME") or ".cmdlog").expanduser(),
            database_url=env.get("CMDLOG_DATABASE_URL") or None,
            lake_uri=env.get("CMDLOG_LAKE_URI") or None,
            replica_url=env.get("CMDLOG_REPLICA_URL") or None,
            replica_max_lag_s=max_lag,
            stats_timeout_s=stats_timeout,
            max_body_bytes=max_body,
            apps=apps,
            extra={k: v for k, v in env.items() if k.startswith("CMDLOG_")},
        )

    @property
    def lake(self) -> str:
        """The lake root: ``lake_uri`` or ``home/lake`` as an absolute path."""
        return self.lake_uri or str((self.home / "lake").resolve())
