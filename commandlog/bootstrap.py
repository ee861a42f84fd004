"""Wiring, done once: open the database, build the bus, let each configured app register its commands."""

from __future__ import annotations

import importlib

from commandlog.bus import CommandBus
from commandlog.errors import ConfigurationError
from commandlog.settings import Settings
from storage.postgres import Database, open_database


def open_db(settings: Settings, *, migrate: bool = True, keep_server: bool = False) -> Database:
    """The operational database of ``settings`` (embedded by default), migrated to head."""
    return open_database(settings.database_url, home=settings.home, migrate=migrate, keep_server=keep_server)


def build_bus(db: Database, settings: Settings) -> CommandBus:
    """A bus on ``db`` with every configured app's commands and handlers registered."""
    bus = CommandBus(db, max_body_bytes=settings.max_body_bytes)
    for name in settings.apps:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise ConfigurationError(f"CMDLOG_APPS names {name!r}, which cannot be imported: {e}") from e
        setup = getattr(module, "setup", None)
        if setup is None:
            raise ConfigurationError(f"CMDLOG_APPS names {name!r}, which has no setup(bus) function")
        setup(bus)
    return bus
