"""commandlog: record every command an application executes, and turn the log into products."""

from commandlog.commands import (
    Command, CommandRegistry, ExcludeCmdBody, NeverStoreCmdBody, Retention, Sensitive, registry,
)
from commandlog.context import ExecutionContext, HandlerContext
from commandlog.errors import CommandLogError, CommandRejectedError, NoHandlerError, UnknownCommandError
from commandlog.ids import uuid7
from commandlog.redaction import WITHHELD

__all__ = [
    "Command", "CommandRegistry", "ExcludeCmdBody", "NeverStoreCmdBody", "Retention", "Sensitive", "registry",
    "ExecutionContext", "HandlerContext", "CommandLogError", "CommandRejectedError", "NoHandlerError",
    "UnknownCommandError", "CommandBus", "HistoricalCommand", "uuid7", "WITHHELD",
]


def __getattr__(name: str):
    if name in ("CommandBus", "HistoricalCommand"):  # lazy: `from commandlog import Command` stays light
        from commandlog import bus  # noqa: PLC0415 — start-up cost: the bus loads psycopg_pool and storage (~0.1 s)

        return getattr(bus, name)
    raise AttributeError(name)
