"""The web app: ``create_app`` builds the FastAPI application (health check, journal API, OpenAPI docs offline).

Run it under any ASGI server: ``uvicorn --factory commandlog.web.app:create_app`` (``cmdlog up`` does this).
Features add their router with one ``app.include_router(...)`` line below.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from commandlog.bootstrap import runtime
from commandlog.bus import CommandBus
from commandlog.monitor import frontend_actions
from commandlog.settings import Settings
from commandlog.web import docs, errors
from commandlog.web.activity import router as activity_router
from commandlog.web.bodies import BodyLimits, RequestGuardMiddleware
from commandlog.web.drafts import router as drafts_router
from commandlog.web.journal import router as journal_router
from commandlog.web.stats import router as stats_router
from storage.postgres import Database

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 3.0
"""How long the health check waits for a database connection before answering 503."""
ENVELOPE_BYTES = 16 * 1024
"""Room for what surrounds a command body in a request (class name, version, comment…)."""


def create_app(settings: Settings | None = None, *, db: Database | None = None,
               bus: CommandBus | None = None) -> FastAPI:
    """The web application on ``db``/``bus`` (the process-wide runtime of ``settings`` when not given)."""
    settings = settings or Settings.from_env()
    if db is None:
        db, bus = runtime(settings)

    app = FastAPI(title="commandlog", version="0.1.0", docs_url=None, redoc_url=None,  # docs.install serves them
                  description="The commandlog web API. Every `/api` route except `/api/health` needs "
                              "`Authorization: Bearer <token>` (make one with `cmdlog token create`).")
    app.state.settings, app.state.db, app.state.bus = settings, db, bus
    errors.install(app)
    # Oversized bodies: 413 while streaming; unstorable JSON (deep, NUL, NaN…) and query strings: 422.
    app.add_middleware(RequestGuardMiddleware, limits=BodyLimits(
        default=settings.max_body_bytes + ENVELOPE_BYTES,
        routes={"/api/frontend-actions": frontend_actions.MAX_REQUEST_BYTES}))
    docs.install(app)

    @app.get("/api/health", tags=["health"], summary="Liveness and database reachability")
    async def health(request: Request) -> JSONResponse:
        """``{"status": "ok"}`` when the database answers; ``{"status": "unavailable"}`` (503) otherwise — the
        reason is logged on the server, never sent (it may name hosts, users or paths)."""
        try:
            await run_in_threadpool(_ping, request.app.state.db)
        except Exception:  # any failure to reach the database makes the app unhealthy
            log.warning("health check: the database does not answer", exc_info=True)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    app.include_router(journal_router)
    app.include_router(drafts_router)
    app.include_router(activity_router)
    app.include_router(stats_router)
    # Routers of later features register here, one line each.
    return app


def _ping(db: Database) -> None:
    db.ping(timeout=HEALTH_TIMEOUT_S)
