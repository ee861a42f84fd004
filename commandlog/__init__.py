"""commandlog: record every command an application executes, and turn the log into products."""

from typing import TYPE_CHECKING

from commandlog.commands import (
    Command,
    CommandRegistry,
    ExcludeCmdBody,
    NeverStoreCmdBody,
    Retention,
    Sensitive,
    registry,
)
from commandlog.context import ExecutionContext, HandlerContext
from commandlog.errors import CommandLogError, CommandRejectedError, NoHandlerError, UnknownCommandError
from commandlog.ids import uuid7
from commandlog.records import HistoricalCommand
from commandlog.redaction import WITHHELD

if TYPE_CHECKING:  # imported on first use below
    from commandlog.bus import CommandBus

__all__ = [
    "WITHHELD",
    "Command",
    "CommandBus",
    "CommandLogError",
    "CommandRegistry",
    "CommandRejectedError",
    "ExcludeCmdBody",
    "ExecutionContext",
    "HandlerContext",
    "HistoricalCommand",
    "NeverStoreCmdBody",
    "NoHandlerError",
    "Retention",
    "Sensitive",
    "UnknownCommandError",
    "registry",
    "uuid7",
]


def __getattr__(name: str) -> object:
    if name == "CommandBus":  # lazy: `from commandlog import Command` stays light
        from commandlog import bus  # noqa: PLC0415 — start-up cost: the bus loads psycopg_pool and storage (~0.1 s)

        return getattr(bus, name)
    raise AttributeError(name)
