"""Redaction: what of a command may reach the global log.

A ``Sensitive`` field keeps its key and gets the ``WITHHELD`` marker as value (present, but withheld), at any
depth of nested models, lists and mappings. Error messages are scrubbed of every sensitive value the same way
(``scrub``, ``scrub_for``): every error text that reaches the global log, a report or a Prefect artifact does.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from commandlog.commands import Sensitive

WITHHELD = "[withheld]"
"""The value that replaces a sensitive field in the global log."""


@functools.cache
def has_sensitive(model_type: type[BaseModel]) -> bool:
    """Whether a model class can hold a sensitive value anywhere (conservative: ``Any`` fields count as yes)."""
    return any(_is_sensitive(info) or _may_hold_sensitive(info.annotation)
               for info in model_type.model_fields.values())


def _may_hold_sensitive(annotation: Any) -> bool:
    if annotation is Any or annotation is object:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return has_sensitive(annotation)
    if get_origin(annotation) is Annotated:
        return any(m is Sensitive for m in get_args(annotation)[1:]) or _may_hold_sensitive(get_args(annotation)[0])
    return any(_may_hold_sensitive(a) for a in get_args(annotation))


def _is_sensitive(info: FieldInfo) -> bool:
    return any(m is Sensitive for m in info.metadata)


def redact(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """``dumped`` (``model.model_dump(mode="json")``) with every sensitive field replaced by ``WITHHELD``."""
    out = dict(dumped)
    for name, info in type(model).model_fields.items():
        if name not in out:
            continue
        out[name] = WITHHELD if _is_sensitive(info) else _redact_value(getattr(model, name), out[name])
    return out


def _redact_value(value: Any, dumped: Any) -> Any:
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        return redact(value, dumped)
    if isinstance(value, (list, tuple, set, frozenset)) and isinstance(dumped, list):
        return [_redact_value(v, d) for v, d in zip(value, dumped, strict=False)]
    if isinstance(value, dict) and isinstance(dumped, dict):
        return {k: _redact_value(v, d) for (k, d), v in zip(dumped.items(), value.values(), strict=False)}
    return dumped


def sensitive_values(model: BaseModel, dumped: dict[str, Any]) -> list[str]:
    """Every sensitive leaf value of the body as text, longest first (for scrubbing free text)."""
    found: list[str] = []
    _collect(model, dumped, found)
    variants: set[str] = set()
    for v in found:  # messages often quote values with repr() or JSON escaping: scrub those spellings too
        variants.update((v, repr(v)[1:-1], json.dumps(v)[1:-1], json.dumps(v, ensure_ascii=False)[1:-1]))
    return sorted({v for v in variants if v}, key=len, reverse=True)


def _collect(model: BaseModel, dumped: dict[str, Any], found: list[str]) -> None:
    for name, info in type(model).model_fields.items():
        if name not in dumped:
            continue
        if _is_sensitive(info):
            _leaves(dumped[name], found)
        else:
            _collect_value(getattr(model, name), dumped[name], found)


def _collect_value(value: Any, dumped: Any, found: list[str]) -> None:
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        _collect(value, dumped, found)
    elif isinstance(value, (list, tuple, set, frozenset)) and isinstance(dumped, list):
        for v, d in zip(value, dumped, strict=False):
            _collect_value(v, d, found)
    elif isinstance(value, dict) and isinstance(dumped, dict):
        for (_, d), v in zip(dumped.items(), value.values(), strict=False):
            _collect_value(v, d, found)


def _leaves(dumped: Any, found: list[str]) -> None:
    if isinstance(dumped, dict):
        for k, v in dumped.items():
            found.append(str(k))
            _leaves(v, found)
    elif isinstance(dumped, list):
        for v in dumped:
            _leaves(v, found)
    elif dumped is not None:
        found.append(dumped if isinstance(dumped, str) else str(dumped))


def scrub(text: str | None, values: list[str]) -> str | None:
    """``text`` with every occurrence of the given sensitive values replaced by ``WITHHELD``."""
    if not text or not values:
        return text
    for v in values:
        text = text.replace(v, WITHHELD)
    return text


def scrub_for(command: BaseModel, text: str | None) -> str | None:
    """``text`` (an error message about ``command``) scrubbed of every sensitive value of the command's body."""
    if not text or not has_sensitive(type(command)):
        return text
    return scrub(text, sensitive_values(command, command.model_dump(mode="json")))
