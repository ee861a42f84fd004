"""Ingesting frontend actions: validate a single action or a batch, store it in ``frontend_action``, publish it.

    CommandLogError
     └── FrontendActionError           an action (or the request) is not acceptable; ``errors`` name the fields
          └── ActionTooLargeError      a payload over ``MAX_PAYLOAD_BYTES`` or a request too large
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from commandlog import command_json
from commandlog.auth.tokens import Principal
from commandlog.errors import CommandLogError, UnstorableValueError
from commandlog.ids import uuid7
from commandlog.monitor.publisher import action_item, publisher_for
from commandlog.validation import dumps, errors_text, validation_errors
from storage import frontend_actions as store
from storage.postgres import Database

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 16 * 1024
"""Largest accepted payload of one action (its compact JSON)."""
MAX_BATCH = 100
"""Most actions in one request."""
MAX_REQUEST_BYTES = MAX_BATCH * (MAX_PAYLOAD_BYTES + 1024)
"""Largest accepted request body."""
MAX_AGE = dt.timedelta(hours=24)
"""Oldest accepted ``occurred_at`` (older reports are refused: they would land outside the live partitions)."""
MAX_SKEW = dt.timedelta(minutes=5)
"""How far in the future ``occurred_at`` may be (client clocks drift)."""


class FrontendActionError(CommandLogError):
    """The request or one of its actions is not acceptable; ``errors`` lists ``{field, message}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(errors_text(errors))


class ActionTooLargeError(FrontendActionError):
    """A payload or the whole request is larger than allowed."""


class FrontendAction(BaseModel):
    """One action a user took in a frontend; its actor is the token's subject (an ``actor_id`` field is refused)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,99}$",
                        description="Dotted name, e.g. `invoice.opened` (letters, digits, `_ . : -`, ≤ 100).")
    payload: dict[str, Any] = Field(default_factory=dict, description="JSON object, at most 16 KiB.")
    occurred_at: dt.datetime | None = Field(None, description="When it happened (ISO 8601); default: now.")
    correlation_id: uuid.UUID | None = Field(None, description="Pass it on to the commands the action triggers.")
    action_uuid: uuid.UUID | None = Field(None, description="Client-chosen id: a retried report is stored once.")
    tenant_id: str | None = Field(None, min_length=1, max_length=128, description="Admin tokens only.")


def parse_request(raw: bytes) -> tuple[list[Any], bool]:
    """The actions of a request body (one object, a JSON array, or ``{"actions": [...]}``) and whether a batch."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise ActionTooLargeError([{"field": "body",
                                    "message": f"request is {len(raw)} bytes, over {MAX_REQUEST_BYTES}"}])
    try:
        body = command_json.loads(raw, field="body")
    except UnstorableValueError as e:  # too deep, NUL, lone surrogate, NaN, huge integer: named by path
        raise FrontendActionError(e.errors) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FrontendActionError([{"field": "body", "message": f"not valid JSON: {e}"}]) from None
    if isinstance(body, dict) and set(body) == {"actions"}:
        body, prefix = body["actions"], "actions"
    elif isinstance(body, list):
        prefix = "actions"
    elif isinstance(body, dict):
        return [body], False
    else:
        raise FrontendActionError([{"field": "body", "message": "must be an action object or a list of them"}])
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH:
        raise FrontendActionError([{"field": prefix, "message": f"must be a list of 1 to {MAX_BATCH} actions"}])
    return body, True


def validate(actions: list[Any], principal: Principal, *, batch: bool = True,
             now: dt.datetime | None = None) -> list[store.FrontendActionRow]:
    """Rows for ``actions``, all valid, or FrontendActionError / ActionTooLargeError naming every bad field."""
    now = now or dt.datetime.now(dt.UTC)
    rows, errors, too_large = [], [], []
    for n, raw in enumerate(actions):
        where = f"actions.{n}." if batch else ""
        if isinstance(raw, dict) and isinstance(raw.get("payload"), (dict, list)):
            size = len(dumps(raw["payload"]).encode())
            if size > MAX_PAYLOAD_BYTES:
                too_large.append({"field": f"{where}payload", "message": f"{size} bytes, over {MAX_PAYLOAD_BYTES}"})
                continue
        try:
            action = FrontendAction.model_validate(raw)
        except ValidationError as e:
            errors += validation_errors(e, prefix=where.rstrip("."))
            continue
        row, problems = _row(action, principal, now, where)
        errors += problems
        if row is not None:
            rows.append(row)
    if too_large:
        raise ActionTooLargeError(too_large + errors)
    if errors:
        raise FrontendActionError(errors)
    return rows


def _row(action: FrontendAction, principal: Principal, now: dt.datetime,
         where: str) -> tuple[store.FrontendActionRow | None, list[dict[str, Any]]]:
    problems = []
    when = action.occurred_at or now
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when < now - MAX_AGE or when > now + MAX_SKEW:
        problems.append({"field": f"{where}occurred_at",
                         "message": "must be within the last 24 hours and not more than 5 minutes ahead"})
    if principal.is_admin and not action.tenant_id:
        problems.append({"field": f"{where}tenant_id", "message": "an admin token must name the tenant"})
    if not principal.is_admin and action.tenant_id not in (None, principal.tenant_id):
        problems.append({"field": f"{where}tenant_id", "message": "a tenant token may only report its own tenant"})
    if problems:
        return None, problems
    return store.FrontendActionRow(
        action_uuid=action.action_uuid or uuid7(when), tenant_id=action.tenant_id or principal.own_tenant,
        actor_id=principal.actor, action=action.action,
        payload_json=dumps(action.payload),
        correlation_id=action.correlation_id, occurred_at=when), []


def ingest(db: Database, rows: list[store.FrontendActionRow]) -> list[uuid.UUID]:
    """Store ``rows`` in one transaction, then publish the ones inserted (a retried id is neither stored nor sent)."""
    with db.connection() as conn:
        inserted = store.insert_actions(conn, rows)
    items = [action_item(action_uuid=r.action_uuid, tenant_id=r.tenant_id, actor_id=r.actor_id, action=r.action,
                         correlation_id=r.correlation_id, occurred_at=r.occurred_at)
             for r in rows if r.action_uuid in inserted]
    try:
        publisher_for(db.url).publish(items)
    except Exception:  # stored is what counts; watchers resuming from their cursor get it from the backfill
        log.exception("could not publish %d frontend action(s)", len(items))
    return [r.action_uuid for r in rows]
