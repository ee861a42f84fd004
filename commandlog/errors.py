"""commandlog errors: one root, a shallow tree; each carries the data a caller needs.

    CommandLogError
     ├── UnknownCommandError        no command class registered under that name
     ├── CommandRejectedError       the command was refused before its handler ran (validation, size, serialisation)
     ├── UnstorableValueError       a value the log cannot store (NUL, lone surrogate, NaN, huge integer); names fields
     │    └── JsonNestingError      JSON nested deeper than allowed
     ├── NoHandlerError             a command class has no registered handler
     └── ConfigurationError         a setting has an unusable value
"""

from __future__ import annotations

import uuid


class CommandLogError(Exception):
    """Root of commandlog's errors."""


class UnknownCommandError(CommandLogError):
    """No command class is registered under the given name."""

    def __init__(self, cmd_class: str) -> None:
        self.cmd_class = cmd_class
        super().__init__(f"unknown command class {cmd_class!r}")


def errors_text(errors: list[dict], *, whole: str | None = None) -> str:
    """Field errors (``{field, message}`` maps, as ``validation.validation_errors`` renders pydantic's) as one line,
    ``field: message; …``; an error without a field is named ``whole`` when given. Every error message built from
    such maps uses this."""
    return "; ".join(f"{err.get('field') or whole}: {err['message']}" if err.get("field") or whole
                     else err["message"] for err in errors)


class CommandRejectedError(CommandLogError):
    """The command was refused before its handler ran; ``errors`` name each field and what was wrong."""

    def __init__(self, cmd_class: str, errors: list[dict], *, cmd_uuid: uuid.UUID | None = None) -> None:
        self.cmd_class = cmd_class
        self.errors = errors
        self.cmd_uuid = cmd_uuid
        super().__init__(f"{cmd_class} rejected: {errors_text(errors)}")


class UnstorableValueError(CommandLogError, ValueError):
    """A value the log cannot store (see ``command_json.check_storable``); ``errors`` name each field and the
    problem."""

    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors
        super().__init__(errors_text(errors))


class JsonNestingError(UnstorableValueError):
    """A JSON value given by a client nests deeper than allowed; ``errors`` name the field."""

    def __init__(self, field: str, limit: int) -> None:
        self.field = field
        super().__init__([{"field": field, "message": f"nesting deeper than {limit} levels"}])


class NoHandlerError(CommandLogError):
    """A command class has no handler registered on the bus."""


class ConfigurationError(CommandLogError):
    """A setting has an unusable value."""
