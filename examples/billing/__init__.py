"""The billing sample application: the demo, the tests and the benchmarks run on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from examples.billing import commands, schema
from examples.billing.commands import ALL_COMMANDS
from examples.billing.handlers import HANDLERS
from examples.billing.subjects import register as register_subject_loader

if TYPE_CHECKING:  # only the annotation: importing the commands must not start psycopg and storage
    from commandlog import CommandBus


def setup(bus: CommandBus, *, install_schema: bool = True) -> CommandBus:
    """Create billing's tables (when missing) and register its handlers on ``bus``; returns the bus."""
    register_subject_loader()  # draft projections show billing subjects' before/after state

    if install_schema:
        schema.install(bus.db)
    for command_type, handler in HANDLERS.items():
        bus.register(command_type, handler)
    return bus


__all__ = ["ALL_COMMANDS", "commands", "setup"]
