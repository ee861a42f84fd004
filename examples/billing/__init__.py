"""The billing sample application: the demo, the tests and the benchmarks run on it."""

from __future__ import annotations

from examples.billing import commands
from examples.billing.commands import ALL_COMMANDS
from examples.billing import schema
from examples.billing.handlers import HANDLERS
from examples.billing.subjects import register as register_subject_loader


def setup(bus, *, install_schema: bool = True):
    """Create billing's tables (when missing) and register its handlers on ``bus``; returns the bus."""
    register_subject_loader()  # draft projections show billing subjects' before/after state

    if install_schema:
        schema.install(bus.db)
    for command_type, handler in HANDLERS.items():
        bus.register(command_type, handler)
    return bus


__all__ = ["commands", "ALL_COMMANDS", "setup"]
