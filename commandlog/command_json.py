"""JSON that enters the log: parsing client JSON and the one rule for "can the log store this value?"

``check_storable`` (also applied by ``loads``):

- nesting deeper than ``MAX_DEPTH`` → ``JsonNestingError`` ("body: nesting deeper than 64 levels"), instead of a
  ``RecursionError`` from the parser, pydantic or the encoder further on;
- U+0000 in a string or a key (Postgres ``text`` and ``jsonb`` refuse it), a lone surrogate (not UTF-8), NaN or
  ±Infinity (not JSON; pydantic would silently write ``null``), an integer outside the signed 64-bit range (Postgres
  would store it, but Python cannot read back one of more than 4300 digits and no bigint column holds it) →
  ``UnstorableValueError`` whose ``errors`` name each field by its path (``body.lines.0.description``).

Integers between 2**53 and 2**63 are accepted and stored exactly; JavaScript's ``JSON.parse`` rounds them, so a
browser client that must show such ids exactly parses them as big numbers (or the command declares them as text).
``storable_text`` makes any text storable (NUL and lone surrogates written as ``\\u`` escapes, length capped) for
the identifiers and messages of a rejected or failed row, so that every attempt leaves its row.
Callers: the CLI (``draft create|edit --body``), ``bus.submit``/``execute``/``import_history``, the draft service,
frontend actions and the web app (every JSON request body and query string).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from commandlog.errors import JsonNestingError, UnstorableValueError

MAX_DEPTH = 64
"""Deepest nesting accepted in JSON from clients (a scalar at the top is depth 0, ``{"a": 1}`` depth 1)."""
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
"""Integers the log accepts: the signed 64-bit range (a Postgres ``bigint``)."""
MAX_ERRORS = 10
"""At most this many problems are named in one error."""


class _HugeInt(str):
    """An integer literal of more digits than any accepted integer has, kept as text (never converted)."""


def _parse_int(digits: str) -> int | _HugeInt:
    # Python refuses to convert more than 4300 digits (a ValueError without a field); anything past 20 digits is out
    # of range anyway, so it is kept as a marker that check_storable reports with its path.
    return _HugeInt(digits) if len(digits) > 20 else int(digits)


def loads(text: str | bytes, *, field: str = "body") -> Any:
    """``json.loads`` that applies ``check_storable``: ``JsonNestingError`` / ``UnstorableValueError`` naming ``field``.

    Other bad input raises ``json.JSONDecodeError`` / ``UnicodeDecodeError`` as ``json.loads`` does.
    """
    try:
        value = json.loads(text, parse_int=_parse_int)
    except RecursionError:  # deeper than the parser's own stack allows: far over MAX_DEPTH
        raise JsonNestingError(field, MAX_DEPTH) from None
    check_storable(value, field=field)
    return value


def check_storable(value: Any, *, field: str = "body") -> None:
    """Raise when the log cannot store ``value`` (parsed JSON, or a model's ``model_dump()``): see the module docstring.

    Too deep → ``JsonNestingError`` naming ``field``; bad values → ``UnstorableValueError`` naming each path under
    ``field``. Iterative, so any depth is measured without recursion.
    """
    problems: list[tuple[Any, str]] = []
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]  # path: None (the root) or (parent path, key)
    while stack and len(problems) < MAX_ERRORS:
        node, depth, path = stack.pop()
        kind = type(node)
        if kind is str or isinstance(node, str):
            problem = "is an integer out of range" if kind is _HugeInt else text_problem(node)
        elif kind is dict or isinstance(node, Mapping):
            if depth >= MAX_DEPTH:
                raise JsonNestingError(field, MAX_DEPTH)
            for key, child in node.items():
                if type(key) is not str or "\x00" in key or not key.isascii():
                    problem = text_problem(str(key))
                    if problem:
                        problems.append(((path, key), f"key {problem}"))
                stack.append((child, depth + 1, (path, key)))
            continue
        elif kind is list or isinstance(node, list | tuple | set | frozenset):
            if depth >= MAX_DEPTH:
                raise JsonNestingError(field, MAX_DEPTH)
            stack.extend((child, depth + 1, (path, i)) for i, child in enumerate(node))
            continue
        else:
            problem = _scalar_problem(node)
        if problem:
            problems.append((path, problem))
    if problems:
        raise UnstorableValueError([{"field": _path_name(field, p), "message": m} for p, m in problems])


def may_be_unstorable(json_text: str) -> bool:
    """A cheap screen of JSON text serialised by pydantic: False means ``check_storable`` passes on its value.

    NUL is escaped as ``\\u0000``; NaN and infinities come out as ``null`` (or ``NaN``/``Infinity`` tokens, or
    Decimal strings); out-of-range integers have at least 19 digits; deep values have many brackets. The bus runs
    the full check only when one of these shows, so a plain body costs a few substring scans.
    """
    return ("\\u0000" in json_text or "null" in json_text or "NaN" in json_text or "Infinity" in json_text
            or json_text.count("[") + json_text.count("{") > MAX_DEPTH or _LONG_DIGITS.search(json_text) is not None)


_LONG_DIGITS = re.compile(r"[0-9]{19}")


def _path_name(field: str, path: Any) -> str:
    keys = []
    while path is not None:
        path, key = path
        keys.append(storable_text(key, limit=60))
    return ".".join([field, *reversed(keys)])


check_depth = check_storable
"""The former name: the depth rule is part of ``check_storable``."""


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if MIN_INT <= value <= MAX_INT else f"is an integer out of range ({MIN_INT}..{MAX_INT})"
    if isinstance(value, float):
        return None if math.isfinite(value) else "is NaN or Infinity, which JSON cannot carry"
    if isinstance(value, Decimal):
        return None if value.is_finite() else "is NaN or Infinity, which JSON cannot carry"
    if isinstance(value, bytes):
        return "contains NUL (\\u0000), which Postgres cannot store" if b"\x00" in value else None
    return None  # dates, UUIDs, enums…: their JSON text is always storable


def text_problem(text: str) -> str | None:
    """What makes ``text`` unstorable (NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return "contains NUL (\\u0000), which Postgres cannot store"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate, which is not UTF-8"
    return None


def storable_text(text: Any, *, limit: int | None = None) -> str:
    """``text`` as the log can store it: NUL and lone surrogates spelled as ``\\uXXXX``, at most ``limit`` chars."""
    text = "" if text is None else text if isinstance(text, str) else str(text)
    if text_problem(text):
        text = "".join(f"\\u{ord(ch):04x}" if ch == "\x00" or 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"
