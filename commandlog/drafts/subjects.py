"""Subject loaders: how a domain shows the current state of the entities (``kind:id``) a command touches.

A projection calls the command's domain loader before and after the handler (inside the rolled-back transaction)
and turns the two snapshots into a structured diff; a hash of the "before" snapshot is the projection's
fingerprint, which an approval compares with the state at approval time. A domain registers one loader:

    loaders.register("billing", load_billing_subjects)   # loader(conn, tenant_id, subjects) -> {subject: state}

A state is a JSON-ready mapping, or None when the entity does not exist. Loaders must not show secrets: the diff
is displayed to reviewers (Prefect UI, CLI); include a change marker (e.g. ``updated_at``) so that a change of a
hidden value still changes the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic_core import to_jsonable_python

from storage.postgres import Connection

SubjectLoader = Callable[[Connection, str, Sequence[str]], Mapping[str, Any]]


class SubjectLoaders:
    """Subject loaders by domain (the part of ``cmd_class`` before the first dot, e.g. ``billing``)."""

    def __init__(self) -> None:
        self._loaders: dict[str, SubjectLoader] = {}

    def register(self, domain: str, loader: SubjectLoader) -> SubjectLoader:
        """Make ``loader`` the loader of ``domain`` (a later registration replaces an earlier one)."""
        self._loaders[domain] = loader
        return loader

    def for_class(self, cmd_class: str) -> SubjectLoader | None:
        """The loader of ``cmd_class``'s domain, or None."""
        return self._loaders.get(cmd_class.split(".", 1)[0])

    def load(self, conn: Connection, tenant_id: str, cmd_class: str,
             subjects: Sequence[str]) -> dict[str, Any] | None:
        """``{subject: state}`` for every subject, JSON-ready; None when the domain has no loader."""
        loader = self.for_class(cmd_class)
        if loader is None:
            return None
        state = loader(conn, tenant_id, list(subjects))
        return {s: to_jsonable_python(state.get(s)) for s in subjects}


loaders = SubjectLoaders()
"""The process-wide registry; a domain registers its loader when its app is set up."""


def fingerprint(snapshot: Mapping[str, Any] | None) -> str:
    """A stable hash of a snapshot (``sha256:<hex>``): equal states give equal fingerprints."""
    text = json.dumps(to_jsonable_python(snapshot), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per subject: ``{subject, change: created|updated|deleted|unchanged, fields: [{path, before, after}]}``.

    Nested mappings and lists are compared leaf by leaf; a path joins keys and list indexes with dots.
    """
    before, after = before or {}, after or {}
    out = []
    for subject in list(dict.fromkeys([*before, *after])):
        b, a = before.get(subject), after.get(subject)
        if b is None and a is None:
            change = "unchanged"
        elif b is None:
            change = "created"
        elif a is None:
            change = "deleted"
        else:
            change = "updated" if b != a else "unchanged"
        fields = [{"path": p, "before": vb, "after": va} for p, vb, va in _leaf_changes("", b, a)]
        out.append({"subject": subject, "change": change, "fields": fields})
    return out


_MISSING = None


def _leaf_changes(path: str, b: Any, a: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(b, Mapping) or isinstance(a, Mapping):
        b = b if isinstance(b, Mapping) else {}
        a = a if isinstance(a, Mapping) else {}
        return [c for k in dict.fromkeys([*b, *a]) for c in _leaf_changes(_join(path, k), b.get(k), a.get(k))]
    if isinstance(b, list) and isinstance(a, list):
        n = max(len(b), len(a))
        return [c for i in range(n) for c in _leaf_changes(_join(path, i),
                                                           b[i] if i < len(b) else _MISSING,
                                                           a[i] if i < len(a) else _MISSING)]
    return [] if b == a else [(path, b, a)]


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
