"""Checking what enters the log: JSON serialisation, execution contexts, and field errors that name the field."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from commandlog.command_json import text_problem
from commandlog.commands import Command
from commandlog.context import ExecutionContext
from commandlog.errors import errors_text  # noqa: F401 — re-exported: the text form of validation_errors

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Built once: ``json.dumps`` with options builds a new encoder per call (on the bus's hot path, twice a command)."""


def dumps(value: Any) -> str:
    """Compact JSON text; NaN and infinities are refused (Postgres jsonb has none)."""
    return _ENCODER.encode(value)


def encode_body(command: Command) -> str:
    """A command's body as the log stores it (and the one size limit counts): pydantic's compact JSON, serialised
    in Rust. The bus, the draft service and everything else that stores or measures a body call this."""
    return command.model_dump_json()


def as_logged(value: Any) -> Any:
    """``value`` as the log would store and read it back: ``to_json``, encoded by ``dumps``, parsed again."""
    return json.loads(dumps(to_json(value)))


def json_or_none(value: Any) -> str | None:
    """``dumps(value)``, or None for None."""
    return None if value is None else dumps(value)


def to_json(result: Any) -> Any:
    """A handler's result as JSON-ready data (pydantic models dumped in JSON mode)."""
    if result is None:
        return None
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return to_jsonable_python(result)


MAX_ID_CHARS = 200
"""Longest tenant or actor id accepted (ids are indexed; a longer one could not even be logged)."""


def context_errors(context: ExecutionContext) -> list[dict]:
    """What is wrong with a context, by field: tenant and actor must be storable non-empty strings, links UUIDs."""
    errors = []
    for name in ("tenant_id", "actor_id"):
        value = getattr(context, name, None)
        if not isinstance(value, str) or not value.strip():
            errors.append({"field": name, "message": "must be a non-empty string"})
        elif problem := text_problem(value):
            errors.append({"field": name, "message": problem})
        elif len(value) > MAX_ID_CHARS:
            errors.append({"field": name, "message": f"is {len(value)} characters, over {MAX_ID_CHARS}"})
    for name in ("correlation_id", "causation_id", "replay_of", "draft_uuid"):
        if not isinstance(getattr(context, name, None), uuid.UUID | None):
            errors.append({"field": name, "message": "must be a UUID or None"})
    return errors


def serialisation_error(command: Command, e: Exception) -> dict:
    """Name the first field whose value cannot be serialised to JSON."""
    for name in type(command).model_fields:
        try:
            dumps(command.model_dump(mode="json", include={name}))
        except (PydanticSerializationError, TypeError, ValueError) as fe:
            return {"field": name, "message": f"value cannot be serialised to JSON: {_first_line(fe)}"}
    return {"field": None, "message": f"body cannot be serialised to JSON: {_first_line(e)}"}


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def validation_errors(e: ValidationError, *, prefix: str = "") -> list[dict]:
    """Pydantic errors as ``{field, message, type}`` — without the offending input, which may be sensitive.

    The one rendering of pydantic errors: ``field`` is the dotted path (``lines.0.amount``) under ``prefix`` (e.g.
    ``actions.3`` for one item of a batch), None for an error of the whole object.
    """
    return [{"field": ".".join(str(p) for p in (*(prefix.split(".") if prefix else ()), *err["loc"])) or None,
             "message": err["msg"], "type": err["type"]}
            for err in e.errors(include_url=False, include_input=False)]

