"""commandlog: record every command an application executes, and turn the log into products."""

from typing import TYPE_CHECKING

from commandlog.commands import (
    Command, CommandRegistry, ExcludeCmdBody, NeverStoreCmdBody, Retention, Sensitive, registry,
)
from commandlog.context import ExecutionContext, HandlerContext
from commandlog.errors import CommandLogError, CommandRejectedError, NoHandlerError, UnknownCommandError

if TYPE_CHECKING:
    from commandlog.bus import CommandBus

__all__ = [
    "Command", "CommandRegistry", "ExcludeCmdBody", "NeverStoreCmdBody", "Retention", "Sensitive", "registry",
    "ExecutionContext", "HandlerContext", "CommandLogError", "CommandRejectedError", "NoHandlerError",
    "UnknownCommandError", "CommandBus",
]


def __getattr__(name: str) -> "type[CommandBus]":
    if name == "CommandBus":  # lazy: the bus pulls in psycopg and storage
        from commandlog.bus import CommandBus

        return CommandBus
    raise AttributeError(name)
