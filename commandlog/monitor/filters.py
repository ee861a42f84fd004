"""What a watcher may and wants to see: ``ActivityFilter`` (tenant fence first, then kinds/classes/subjects/actor).

    CommandLogError
     └── ActivityFilterError     a filter parameter has an unusable value (``field`` names it)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from commandlog.errors import CommandLogError

KINDS = ("command", "event", "frontend_action")
_MAX_VALUES = 50


class ActivityFilterError(CommandLogError):
    """A filter parameter has an unusable value; ``field`` names it."""

    def __init__(self, field_name: str, problem: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {problem}")


@dataclass(frozen=True, kw_only=True)
class ActivityFilter:
    """Which items a subscription receives. ``tenant_id`` is the fence: None only for admin principals."""

    tenant_id: str | None
    """Only items of this tenant (None: every tenant — admin principals only)."""
    kinds: frozenset[str] | None = None
    """Item kinds (``command``, ``event``, ``frontend_action``); None for all."""
    classes: frozenset[str] | None = None
    """Command classes; events follow their command's class; frontend actions never match a class filter."""
    subjects: frozenset[str] | None = None
    """Items touching any of these subjects."""
    actor: str | None = None
    """Items of this actor."""

    def accepts(self, item: dict[str, Any]) -> bool:
        """True when ``item`` is inside the fence and matches every filter given."""
        if self.tenant_id is not None and item.get("tenant_id") != self.tenant_id:
            return False
        if self.kinds is not None and item.get("kind") not in self.kinds:
            return False
        if self.classes is not None and item.get("cmd_class") not in self.classes:
            return False
        if self.actor is not None and item.get("actor_id") != self.actor:
            return False
        return self.subjects is None or not self.subjects.isdisjoint(item.get("subjects") or ())


def parse_filter(*, tenant_id: str | None, kinds: str | None = None, classes: str | None = None,
                 subjects: str | None = None, actor: str | None = None) -> ActivityFilter:
    """An ``ActivityFilter`` from comma-separated query values; bad values raise ``ActivityFilterError``."""
    kind_set = _values("kinds", kinds)
    if kind_set is not None and not kind_set <= set(KINDS):
        bad = ", ".join(sorted(kind_set - set(KINDS)))
        raise ActivityFilterError("kinds", f"unknown kind(s) {bad}; use {', '.join(KINDS)}")
    if actor is not None and (not actor.strip() or len(actor) > 200):
        raise ActivityFilterError("actor", "must be a non-empty string of at most 200 characters")
    return ActivityFilter(tenant_id=tenant_id, kinds=kind_set, classes=_values("classes", classes),
                          subjects=_values("subjects", subjects), actor=actor)


def _values(name: str, raw: str | None) -> frozenset[str] | None:
    if raw is None or not raw.strip():
        return None
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if len(values) > _MAX_VALUES or any(len(v) > 200 or "\x00" in v for v in values):
        raise ActivityFilterError(name, f"at most {_MAX_VALUES} values of at most 200 characters each")
    return frozenset(values)
