"""JSON request bodies nested too deeply are answered 422 before any route parses them.

FastAPI parses a JSON body with ``json.loads``; past Python's recursion limit that raises ``RecursionError`` and the
client gets a bare 400 ("There was an error parsing the body"), and a body shallower than that but still absurdly
deep reaches pydantic and our services. This ASGI middleware reads a JSON body once, applies the one nesting rule
(``commandlog.command_json.loads``) and answers ``422 {"error": "JsonNestingError", "detail": "body: nesting deeper
than 64 levels", "errors": [...]}``; otherwise it hands the same bytes on unchanged. Invalid JSON is left to the
route, which answers it as before.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commandlog import command_json
from commandlog.errors import JsonNestingError
from commandlog.web import errors

_METHODS = frozenset({"POST", "PUT", "PATCH"})


class JsonDepthMiddleware:
    """Refuse (422) JSON request bodies that nest deeper than ``command_json.MAX_DEPTH``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            command_json.loads(body, field="body")
        except JsonNestingError as e:
            answer = JSONResponse({"error": type(e).__name__, "detail": str(e), "errors": e.errors},
                                  status_code=errors.status_for(e))
            await answer(scope, receive, send)
            return
        except (ValueError, UnicodeDecodeError):  # not JSON at all: the route answers it as it always did
            pass
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _is_json(scope: Scope) -> bool:
    """A JSON content type, or none at all (FastAPI parses a body without one as JSON)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return True


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` that gives ``messages`` first, then defers to ``then`` (e.g. to see a disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive

