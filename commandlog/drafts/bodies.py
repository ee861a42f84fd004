"""Draft bodies as JSON maps and back, so a UI (or a person with a text editor) can edit a draft.

``to_json_map(cmd)`` gives plain JSON types (UUIDs, dates and decimals as strings, enums as values, nested models
as maps); ``from_json_map`` validates such a map as JSON (pydantic's JSON mode), so the round trip is exact:
``from_json_map(type(c), json.loads(json.dumps(to_json_map(c)))) == c``. Errors name the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from commandlog.command_json import check_storable
from commandlog.commands import Command, CommandRegistry
from commandlog.commands import registry as default_registry
from commandlog.drafts.errors import DraftValidationError
from commandlog.errors import UnknownCommandError, UnstorableValueError
from commandlog.validation import dumps, validation_errors


def to_json_map(command: Command) -> dict[str, Any]:
    """The command's body as a map of plain JSON values."""
    return command.model_dump(mode="json")


def command_type(cmd_class: str, *, registry: CommandRegistry | None = None) -> type[Command]:
    """The registered class named ``cmd_class``; a ``DraftValidationError`` on ``cmd_class`` when unknown."""
    try:
        return (registry or default_registry).get(cmd_class)
    except UnknownCommandError as e:
        raise DraftValidationError(str(cmd_class), [{"field": "cmd_class", "message": str(e)}]) from None


def from_json_map(cmd: str | type[Command], body: Any, *, cmd_version: int | None = None,
                  registry: CommandRegistry | None = None) -> Command:
    """Validate ``body`` as a command of ``cmd`` (a class or its registered name), upcasting an older version."""
    reg = registry or default_registry
    cls = cmd if isinstance(cmd, type) else command_type(cmd, registry=reg)
    if not isinstance(body, Mapping):
        raise DraftValidationError(cls.cmd_class, [{"field": "body", "message": "must be a JSON object"}])
    try:
        check_storable(body)
    except UnstorableValueError as e:
        raise DraftValidationError(cls.cmd_class, e.errors) from None
    data = dict(body)
    if cmd_version is not None and cmd_version < cls.cmd_version:
        try:
            data = reg.upcast(cls.cmd_class, cmd_version, data)
        except ValueError as e:
            raise DraftValidationError(cls.cmd_class, [{"field": "cmd_version", "message": str(e)}]) from None
    try:
        text = dumps(data)
    except (TypeError, ValueError) as e:
        raise DraftValidationError(cls.cmd_class, [{"field": "body", "message": f"not JSON: {e}"}]) from None
    try:
        return cls.model_validate_json(text)
    except ValidationError as e:
        raise DraftValidationError(cls.cmd_class, validation_errors(e)) from None

