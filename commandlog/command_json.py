"""Commands as JSON maps and back, so a UI (or a person with a text editor) can edit a draft.

``to_json_map(cmd)`` gives plain JSON types (UUIDs, dates and decimals as strings, enums as values, nested models
as maps); ``from_json_map`` validates such a map as JSON (pydantic's JSON mode), so the round trip is exact:
``from_json_map(type(c), json.loads(json.dumps(to_json_map(c)))) == c``. Errors name the field.

The one nesting rule for JSON from clients lives here too: ``loads(text, field=…)`` and ``check_depth(value, field=…)``
refuse anything nested deeper than ``MAX_DEPTH`` with ``JsonNestingError`` ("body: nesting deeper than 64 levels")
instead of a ``RecursionError`` from the parser, pydantic or the encoder further on. Callers: the CLI (``draft
create|edit --body``), ``bus.submit``, the draft service and the web app (every JSON request body).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from commandlog.commands import Command, CommandRegistry, registry as default_registry
from commandlog.draft_errors import DraftValidationError
from commandlog.errors import JsonNestingError, UnknownCommandError

MAX_DEPTH = 64
"""Deepest nesting accepted in JSON from clients (a scalar at the top is depth 0, ``{"a": 1}`` depth 1)."""


def loads(text: str | bytes, *, field: str = "body") -> Any:
    """``json.loads`` that refuses nesting deeper than ``MAX_DEPTH`` (``JsonNestingError`` naming ``field``).

    Other bad input raises ``json.JSONDecodeError`` / ``UnicodeDecodeError`` as ``json.loads`` does.
    """
    try:
        value = json.loads(text)
    except RecursionError:  # deeper than the parser's own stack allows: far over MAX_DEPTH
        raise JsonNestingError(field, MAX_DEPTH) from None
    check_depth(value, field=field)
    return value


def check_depth(value: Any, *, field: str = "body") -> None:
    """Raise ``JsonNestingError`` naming ``field`` when ``value`` (parsed JSON) nests deeper than ``MAX_DEPTH``.

    Iterative, so any depth is measured without recursion.
    """
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth + 1 > MAX_DEPTH:
            raise JsonNestingError(field, MAX_DEPTH)
        stack.extend((child, depth + 1) for child in children)


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
        check_depth(body)
    except JsonNestingError as e:
        raise DraftValidationError(cls.cmd_class, e.errors) from None
    data = dict(body)
    if cmd_version is not None and cmd_version < cls.cmd_version:
        try:
            data = reg.upcast(cls.cmd_class, cmd_version, data)
        except ValueError as e:
            raise DraftValidationError(cls.cmd_class, [{"field": "cmd_version", "message": str(e)}]) from None
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise DraftValidationError(cls.cmd_class, [{"field": "body", "message": f"not JSON: {e}"}]) from None
    try:
        return cls.model_validate_json(text)
    except ValidationError as e:
        raise DraftValidationError(cls.cmd_class, _errors(e)) from None


def _errors(e: ValidationError) -> list[dict]:
    # Without the offending input: it may be a sensitive value.
    return [{"field": ".".join(str(p) for p in err["loc"]) or None, "message": err["msg"], "type": err["type"]}
            for err in e.errors(include_url=False, include_input=False)]
