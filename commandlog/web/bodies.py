"""Request bodies and query strings are checked before any route sees them: size while streaming, then the one
storable rule.

- **Size** (413, before parsing): a ``Content-Length`` over the route's limit is refused without reading a byte; a
  chunked body is counted as it arrives and refused as soon as it passes the limit — the rest is never read, so a
  64 MB upload costs at most the limit in memory. Limits are per route prefix (``BodyLimits``): frontend-action
  batches may be larger (``frontend_actions.MAX_REQUEST_BYTES``) than a draft (``CMDLOG_MAX_BODY_BYTES`` plus room
  for the envelope), which is the default of every other route. Applies to every content type.
- **Storable JSON** (422): a JSON body is parsed once with ``commandlog.command_json.loads``, which refuses nesting
  deeper than 64 levels, NUL, lone surrogates, NaN/Infinity and out-of-range integers, naming the field by its
  path: ``{"error": "UnstorableValueError", "detail": …, "errors": [{"field": "body.payload.note", "message":
  "contains NUL (\\u0000), which Postgres cannot store"}]}``. Otherwise the same bytes go on unchanged; invalid
  JSON is left to the route, which answers it as before.
- **Query strings** (422): a parameter with NUL (or bytes that are not UTF-8) is refused naming ``query.<name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commandlog import command_json
from commandlog.errors import CommandLogError, UnstorableValueError
from commandlog.web import errors
from commandlog.web.errors import BodyTooLargeError

_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, kw_only=True)
class BodyLimits:
    """Largest request body per route prefix (the longest matching prefix wins), ``default`` elsewhere."""

    default: int
    """Bytes accepted by routes without their own limit."""
    routes: Mapping[str, int] = field(default_factory=dict)
    """``{path prefix: bytes}``."""

    def for_path(self, path: str) -> int:
        """The limit of ``path``."""
        best = max((p for p in self.routes if path.startswith(p)), key=len, default=None)
        return self.routes[best] if best is not None else self.default


class RequestGuardMiddleware:
    """Refuse oversized bodies (413, while streaming), unstorable JSON bodies and query strings (422)."""

    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem: CommandLogError | None = _query_problem(scope.get("query_string", b""))
        limit = self.limits.for_path(scope["path"])
        length = _content_length(scope)
        if problem is None and length is not None and length > limit:
            problem = BodyTooLargeError(limit, length=length)  # refused before a byte is read
        if problem is not None:
            await errors.response(problem)(scope, receive, send)
            return
        if scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # stop reading here: the rest of the stream is never pulled into memory
                await errors.response(BodyTooLargeError(limit))(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and _is_json(scope):
            try:
                command_json.loads(body, field="body")
            except UnstorableValueError as e:
                await errors.response(e)(scope, receive, send)
                return
            except (ValueError, UnicodeDecodeError):  # not JSON at all: the route answers it as it always did
                pass
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _query_problem(query: bytes) -> UnstorableValueError | None:
    if not query:
        return None
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return UnstorableValueError([{"field": "query", "message": "is not UTF-8"}])
    found = [{"field": f"query.{command_json.storable_text(k, limit=60)}", "message": problem}
             for k, v in pairs for problem in (command_json.text_problem(k + v),) if problem]
    return UnstorableValueError(found) if found else None


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
