"""Wiring, done once: open the database, build the bus, let the library's features and each configured app register
their commands."""

from __future__ import annotations

import importlib
import threading

from commandlog.bus import CommandBus
from commandlog.errors import ConfigurationError
from commandlog.monitor.publisher import install_publisher
from commandlog.retention import policy as retention
from commandlog.settings import Settings
from storage.postgres import Database, as_uri, open_database
from storage.replica import Replica

FEATURE_SETUPS = (retention.setup,)
"""The library's own features that log commands (``retention.Purge``, ``retention.AddLegalHold``,
``retention.RemoveLegalHold``): each ``setup(bus)`` registers its classes and handlers on every bus built here, so
the CLI, the flows and the web app all know them (a replay refuses them for the right reason, not as unknown)."""


def open_db(settings: Settings, *, migrate: bool = True, keep_server: bool = False) -> Database:
    """The operational database of ``settings`` (embedded by default), migrated to head; with
    ``CMDLOG_REPLICA_URL``, its hot standby attached for the reads that may lag (``storage.replica``)."""
    db = open_database(settings.database_url, home=settings.home, migrate=migrate, keep_server=keep_server)
    if settings.replica_url:
        db.replica = Replica(url=as_uri(settings.replica_url), max_lag_s=settings.replica_max_lag_s)
    return db


def build_bus(db: Database, settings: Settings) -> CommandBus:
    """A bus on ``db`` with the library's and every configured app's commands and handlers registered, publishing
    its activity."""
    bus = CommandBus(db, max_body_bytes=settings.max_body_bytes)
    for feature_setup in FEATURE_SETUPS:
        feature_setup(bus)
    for name in settings.apps:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise ConfigurationError(f"CMDLOG_APPS names {name!r}, which cannot be imported: {e}") from e
        setup = getattr(module, "setup", None)
        if setup is None:
            raise ConfigurationError(f"CMDLOG_APPS names {name!r}, which has no setup(bus) function")
        setup(bus)
    # [monitor] every live attempt is published with NOTIFY after commit, whichever process runs it.
    install_publisher(bus)
    return bus


_runtimes: dict[tuple, tuple[Database, CommandBus]] = {}
_runtime_lock = threading.Lock()


def runtime(settings: Settings | None = None) -> tuple[Database, CommandBus]:
    """The process-wide ``(db, bus)`` for ``settings`` (from the environment when None), opened once.

    Prefect tasks call this at their entry: a worker process keeps one pool and one bus for all its task runs.
    """
    settings = settings or Settings.from_env()
    key = (settings.database_url, str(settings.home.resolve()), settings.apps, settings.max_body_bytes,
           settings.replica_url, settings.replica_max_lag_s)
    with _runtime_lock:
        if key not in _runtimes:
            db = open_db(settings)
            _runtimes[key] = (db, build_bus(db, settings))
        return _runtimes[key]


def close_runtimes() -> None:
    """Close every runtime opened by ``runtime`` (pools, embedded server handles)."""
    with _runtime_lock:
        for db, _ in _runtimes.values():
            db.close()
        _runtimes.clear()
