"""Comparing a dry-run replay with the original's recorded outcome: the verdict and a field-level diff.

Verdicts: ``reproduced`` (same status; same result and events, or same error), ``diverged`` (same status, something
differs: the diff names each field), ``now_succeeds`` (the original failed, the replay succeeds) and ``now_fails``.
Values are compared as JSON (what the log stores), so ``Decimal("1.50")`` in a fresh result equals ``"1.50"`` in the
recorded one exactly when they serialise the same way.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from commandlog.records import Outcome
from commandlog.validation import as_logged

Verdict = Literal["reproduced", "diverged", "now_succeeds", "now_fails"]
_ABSENT = object()


def replay_events(outcome: Outcome) -> list[dict]:
    """The events the replayed command itself emitted (not its sub-commands'), as ``{"type", "payload"}``."""
    return [{"type": e.event_type, "payload": as_logged(e.payload)} for e in outcome.events
            if e.cmd_uuid == outcome.cmd_uuid]


def compare(*, original_status: str, original_result: Any, original_events: list[dict],
            original_error: tuple[str | None, str | None], outcome: Outcome) -> tuple[Verdict, list[dict]]:
    """The verdict of a dry run against the original, and the differing fields (``field``/``change``/values)."""
    was_ok, now_ok = original_status == "succeeded", outcome.status == "succeeded"
    if not was_ok and now_ok:
        return "now_succeeds", []
    if was_ok and not now_ok:
        return "now_fails", []
    diffs: list[dict] = []
    if was_ok:
        field_diff("result", as_logged(original_result), as_logged(outcome.result), diffs)
        field_diff("events", as_logged(original_events), replay_events(outcome), diffs)
    else:
        field_diff("error_type", original_error[0], outcome.error_type, diffs)
        field_diff("error_message", original_error[1], outcome.error_message, diffs)
    return ("diverged" if diffs else "reproduced"), diffs


def field_diff(path: str, original: Any, replay: Any, out: list[dict]) -> list[dict]:
    """Append to ``out`` one entry per leaf that differs between two JSON values; returns ``out``."""
    if isinstance(original, dict) and isinstance(replay, dict):
        for key in sorted(set(original) | set(replay), key=str):
            field_diff(f"{path}.{key}", original.get(key, _ABSENT), replay.get(key, _ABSENT), out)
    elif isinstance(original, list) and isinstance(replay, list):
        for i in range(max(len(original), len(replay))):
            field_diff(f"{path}[{i}]", original[i] if i < len(original) else _ABSENT,
                       replay[i] if i < len(replay) else _ABSENT, out)
    elif original is _ABSENT:
        out.append({"field": path, "change": "added", "original": None, "replay": replay})
    elif replay is _ABSENT:
        out.append({"field": path, "change": "removed", "original": original, "replay": None})
    elif original != replay or (type(original) is not type(replay) and _strict(original, replay)):
        out.append({"field": path, "change": "changed", "original": original, "replay": replay})
    return out


def _strict(a: Any, b: Any) -> bool:
    """True/1 and 1/1.0 compare equal in Python; in JSON only the numeric pair is the same value."""
    return isinstance(a, bool) or isinstance(b, bool)


def summarize(diffs: list[dict], *, limit: int = 5) -> str:
    """The differing fields in one line, e.g. ``result.total: "10.00" -> "12.00"``."""
    parts = [f"{d['field']}: {json.dumps(d['original'])} -> {json.dumps(d['replay'])}" for d in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"(+{len(diffs) - limit} more)")
    return "; ".join(parts)
