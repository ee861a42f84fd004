"""The live monitor over HTTP: ``WS /ws/activity``, ``POST /api/ws-ticket``, ``/api/frontend-actions`` and the page.

``WS /ws/activity`` authenticates with ``Authorization: Bearer <token>`` or ``?ticket=`` (from ``POST
/api/ws-ticket``), then streams the items of the token's tenant (admin: every tenant, or ``?tenant=``), narrowed by
``kinds``, ``classes``, ``subjects`` (comma-separated) and ``actor``. ``?cursor=`` resumes: the missed items are
backfilled from the journal first. Messages (JSON text): ``hello``, ``backfill`` (+ ``backfill_done``),
``activity`` (live items), ``heartbeat``. Close codes: 4401 bad/expired/revoked token or ticket, 4403 a tenant
that is not the token's, 4400 a bad filter or cursor, 4429 rate limited, 4008 the client reads too slowly,
1012 the server lost its database listener (resume from the cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse
from starlette.applications import Starlette
from starlette.websockets import WebSocketDisconnect

from commandlog.auth.tickets import check_token_still_valid, issue_ticket, redeem_ticket
from commandlog.auth.tokens import AuthenticationError, PermissionDeniedError, Principal, authenticate
from commandlog.journal.entries import InvalidFilterError
from commandlog.monitor import frontend_actions as actions
from commandlog.monitor.backfill import backfill, parse_cursor
from commandlog.monitor.filters import ActivityFilter, parse_filter
from commandlog.monitor.hub import DEFAULT_MAX_QUEUE, ActivityHub, Subscription, activity_frame
from commandlog.monitor.publisher import stamp
from commandlog.monitor.ratelimit import RateLimiter
from commandlog.validation import dumps
from commandlog.web import errors
from commandlog.web.auth import require_role
from storage import frontend_actions as actions_store
from storage.postgres import Database

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
COALESCE = 64
"""At most this many queued notifications go out in one message (a slow client then waits on each send)."""
_ASSETS = {"monitor.js": "text/javascript", "monitor.css": "text/css", "activity.js": "text/javascript",
           "activity.css": "text/css", "uplot.iife.min.js": "text/javascript", "uplot.min.css": "text/css",
           "uplot.LICENSE": "text/plain"}

@dataclass(kw_only=True)
class MonitorConfig:
    """Per-app knobs (``app.state.monitor``); tests shrink them."""

    max_queue: int = field(default_factory=lambda: int(os.environ.get("CMDLOG_MONITOR_QUEUE", DEFAULT_MAX_QUEUE)))
    """Notifications a watcher may have queued before it is dropped as too slow (``CMDLOG_MONITOR_QUEUE``)."""
    heartbeat_s: float = 15.0
    """Seconds between heartbeats (each one also re-checks the token)."""
    limiter: RateLimiter = field(default_factory=RateLimiter.from_env)
    """Per-token request budget of the monitor's endpoints."""


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    hub = getattr(app.state, "activity_hub", None)
    if hub is not None:
        await hub.close()


router = APIRouter(tags=["activity"], lifespan=_lifespan)


def monitor_config(app: Starlette) -> MonitorConfig:
    """The app's MonitorConfig (defaults on first use)."""
    if not hasattr(app.state, "monitor"):
        app.state.monitor = MonitorConfig()
    return app.state.monitor


async def activity_hub(app: Starlette) -> ActivityHub:
    """The app's listener in the running event loop, started on first use."""
    hub = getattr(app.state, "activity_hub", None)
    if hub is None or (hub.loop is not None and not hub.running):
        hub = app.state.activity_hub = ActivityHub(app.state.db.url)
    await hub.start()
    return hub


# -- HTTP --------------------------------------------------------------------------------------------------------

@router.post("/api/ws-ticket", summary="A single-use ticket (30 s) to open /ws/activity from a browser")
async def post_ws_ticket(request: Request, principal: Principal = Depends(require_role("viewer"))):
    """Trade the bearer token for a ticket: open ``/ws/activity?ticket=…`` within 30 seconds."""
    monitor_config(request.app).limiter.check(principal.token_id)
    ticket, expires = await run_in_threadpool(issue_ticket, request.app.state.db, principal)
    return {"ticket": ticket, "expires_at": expires.isoformat(), "url": f"/ws/activity?ticket={ticket}"}


@router.post("/api/frontend-actions", status_code=201, summary="Report frontend actions (one, or a batch ≤ 100)")
async def post_frontend_actions(request: Request, principal: Principal = Depends(require_role("viewer"))):
    """Store and stream actions: ``{"action", "payload"?, "occurred_at"?, "correlation_id"?, "action_uuid"?}``, a list
    of them or ``{"actions": [...]}``; the actor is the token's subject (an ``actor_id`` is refused). 413 payload >
    16 KiB, 422 field errors, 429."""
    monitor_config(request.app).limiter.check(principal.token_id)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > actions.MAX_REQUEST_BYTES:
        raise actions.ActionTooLargeError([{"field": "body", "message": f"request is {length} bytes, over "
                                            f"{actions.MAX_REQUEST_BYTES}"}])
    raw, batch = actions.parse_request(await request.body())
    rows = actions.validate(raw, principal, batch=batch)
    ids = await run_in_threadpool(actions.ingest, request.app.state.db, rows)
    return {"accepted": len(ids), "action_uuids": [str(i) for i in ids]}


@router.get("/api/frontend-actions", summary="A tenant's frontend actions, newest first (full payloads)")
async def get_frontend_actions(request: Request, principal: Principal = Depends(require_role("viewer")),
                               correlation_id: str | None = Query(None, description="Only this correlation."),
                               tenant: str | None = Query(None, description="Admin only: the tenant."),
                               limit: int = Query(100, ge=1, le=1000)):
    """Actions of the token's tenant under row-level security; admin tokens name a tenant and get no payloads."""
    if principal.is_admin and not tenant:
        raise PermissionDeniedError("tenant: an admin token must name the tenant (?tenant=…)")
    if not principal.is_admin and tenant not in (None, principal.tenant_id):
        raise PermissionDeniedError("tenant: this token may only read its own tenant")
    try:
        corr = uuid.UUID(correlation_id) if correlation_id is not None else None
    except ValueError:
        raise InvalidFilterError("correlation_id", f"must be a UUID, not {correlation_id!r}") from None
    rows = await run_in_threadpool(actions_store.tenant_actions, request.app.state.db,
                                   tenant or principal.own_tenant, correlation_id=corr, limit=limit)
    out = []
    for r in rows:
        entry = {k: (str(v) if k in ("action_uuid", "correlation_id") and v else v) for k, v in r.items()}
        entry["occurred_at"] = r["occurred_at"].isoformat()
        if principal.is_admin:
            entry.pop("payload", None)
        out.append(entry)
    return {"actions": out}


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    """The journal and live monitor page (plain HTML and a little JS; works offline)."""
    return HTMLResponse((STATIC / "monitor.html").read_text(encoding="utf-8"))


@router.get("/static/monitor/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """The page's scripts and style sheets (uPlot is vendored: see static/VENDORED.md)."""
    if name not in _ASSETS:
        raise HTTPException(404)
    return FileResponse(STATIC / name, media_type=_ASSETS[name])


# -- WebSocket ---------------------------------------------------------------------------------------------------

@router.websocket("/ws/activity")
async def activity_socket(ws: WebSocket, ticket: str | None = None, cursor: str | None = None,
                          kinds: str | None = None, classes: str | None = None, subjects: str | None = None,
                          actor: str | None = None, tenant: str | None = None) -> None:
    """The live activity stream (see the module docstring for messages and close codes)."""
    await ws.accept()
    app, db = ws.app, ws.app.state.db
    config = monitor_config(app)
    try:
        principal = await run_in_threadpool(_ws_principal, db, ws.headers.get("authorization"), ticket)
        config.limiter.check(principal.token_id)
        if not principal.is_admin and tenant not in (None, principal.tenant_id):
            raise PermissionDeniedError("tenant: this token may only watch its own tenant")
        fence = tenant if principal.is_admin else principal.tenant_id
        activity_filter = parse_filter(tenant_id=fence, kinds=kinds, classes=classes, subjects=subjects, actor=actor)
        since = parse_cursor(cursor) if cursor else None
    except tuple(errors.CLOSE_CODE_BY_ERROR) as e:
        await ws.close(errors.close_code_for(e), str(e)[:120])
        return
    hub = await activity_hub(app)
    subscription = hub.subscribe(Subscription(activity_filter, max_queue=config.max_queue))
    try:
        await ws.send_text(dumps({"type": "hello", "cursor": stamp(dt.datetime.now(dt.UTC)),
                                  "role": principal.role, "tenant_id": principal.tenant_id,
                                  "heartbeat_s": config.heartbeat_s}))
        seen: set[str] = set()
        if since is not None:
            seen = await _send_backfill(ws, db, activity_filter, since, admin=principal.is_admin)
        await _pump(ws, subscription, seen, principal, db, config)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(subscription)


def _ws_principal(db: Database, authorization: str | None, ticket: str | None) -> Principal:
    if ticket:
        return redeem_ticket(db, ticket)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationError("missing bearer token or ticket")
    return authenticate(db, token.strip())


async def _send_backfill(ws: WebSocket, db: Database, activity_filter: ActivityFilter, since: dt.datetime, *,
                         admin: bool) -> set[str]:
    items, truncated = await run_in_threadpool(backfill, db, activity_filter, since, admin=admin)
    for start in range(0, len(items), 200):
        chunk = items[start:start + 200]
        await ws.send_text(dumps({"type": "backfill", "cursor": chunk[-1]["at"], "items": chunk}))
    await ws.send_text(dumps({"type": "backfill_done", "count": len(items), "truncated": truncated}))
    return {i["id"] for i in items}


async def _pump(ws: WebSocket, subscription: Subscription, seen: set[str], principal: Principal, db: Database,
                config: MonitorConfig) -> None:
    receiver = asyncio.create_task(_receive_until_closed(ws))
    sender = asyncio.create_task(_send_until_done(ws, subscription, seen, principal, db, config))
    dropped = asyncio.create_task(subscription.dropped.wait())
    done, pending = await asyncio.wait({receiver, sender, dropped}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if dropped in done and sender not in done:  # the sender may be stuck in a send to a client that reads nothing
        await _close(ws, 4008, f"client too slow: more than {subscription.max_queue} messages queued", wait=10)


async def _receive_until_closed(ws: WebSocket) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") and '"ping"' in message["text"]:
            await ws.send_text('{"type":"pong"}')


async def _send_until_done(ws: WebSocket, subscription: Subscription, seen: set[str], principal: Principal,
                           db: Database,
                          config: MonitorConfig) -> None:
    loop = asyncio.get_running_loop()
    seen_until = loop.time() + 30  # ids sent by the backfill may also come live for a short while
    beat = asyncio.create_task(_heartbeats(subscription, config.heartbeat_s))
    try:
        while True:
            await subscription.wakeup.wait()  # no timeout here: a per-message timer would cost a task each time
            subscription.wakeup.clear()
            if subscription.overflowed:
                await _close(ws, 4008, f"client too slow: more than {subscription.max_queue} messages queued")
                return
            if subscription.lost_listener:
                await _close(ws, 1012, "server lost its activity listener; reconnect with your cursor")
                return
            if subscription.heartbeat_due:
                subscription.heartbeat_due = False
                try:
                    await run_in_threadpool(check_token_still_valid, db, principal)
                except AuthenticationError as e:
                    await _close(ws, 4401, str(e))
                    return
                await ws.send_text(dumps({"type": "heartbeat", "cursor": stamp(dt.datetime.now(dt.UTC))}))
            batches: list[tuple[list[str], str, str]] = []
            while subscription.frames and len(batches) < COALESCE:
                batch = subscription.frames.popleft()
                if not (seen and all(i in seen for i in batch[0])):
                    batches.append(batch)
            if batches:
                await ws.send_text(activity_frame(batches))
            if subscription.frames:
                subscription.wakeup.set()  # more than COALESCE were queued: go round again
            if seen and loop.time() > seen_until:
                seen = set()
    finally:
        beat.cancel()


async def _heartbeats(subscription: Subscription, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        subscription.heartbeat_due = True
        subscription.wakeup.set()


async def _close(ws: WebSocket, code: int, reason: str, *, wait: float = 2.0) -> None:
    """Close with ``code``; give up after ``wait`` seconds (the close frame queues behind unread data)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code, reason[:120]), timeout=wait)
