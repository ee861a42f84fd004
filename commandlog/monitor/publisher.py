"""The activity publisher: lean items for every command attempt, domain event and frontend action, sent with
Postgres ``NOTIFY`` once they are committed, so that every web replica's monitor sees work done in any process.

An *item* is a small JSON map, the same for every watcher (it carries no body, no result, no event payload and
only the scrubbed error message, i.e. what an admin may see in ``command_log``)::

    {"kind": "command", "id": "<cmd_uuid>:succeeded", "at": "2026-…Z", "tenant_id": …, "status": …, …}
    {"kind": "event", "id": "<event_uuid>", "at": …, "event_type": …, "cmd_uuid": …, …}
    {"kind": "frontend_action", "id": "<action_uuid>", "at": …, "action": …, "correlation_id": …, …}

``install_publisher(bus)`` adds the bus hooks (``commandlog.bootstrap.build_bus`` calls it): ``started`` is queued
before the command's transaction, ``succeeded``/``failed`` after its commit (the bus fires them then). The
publisher's thread sends each ``NOTIFY`` on its own autocommit connection, i.e. outside the command's transaction
(a ``NOTIFY`` inside a transaction would only be delivered at its commit), and the command does not wait for it.
Payloads are JSON arrays of items packed below ``MAX_PAYLOAD_BYTES``, then sealed (AES-256-GCM with the owner-only
key of ``cmdlog_secret``, ``commandlog.monitor.channel_seal``): any role may ``LISTEN``, none but the platform's may
read or make an item. Postgres refuses payloads of 8000 bytes or more.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import queue
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, overload

from commandlog.bus import CommandBus
from commandlog.monitor.channel_seal import ChannelSeal
from commandlog.records import CommandRecord
from commandlog.validation import dumps as _dumps
from storage.notify import NotifySender

log = logging.getLogger(__name__)

CHANNEL = "cmdlog_activity"
"""The Postgres ``LISTEN``/``NOTIFY`` channel of the activity stream."""
MAX_PAYLOAD_BYTES = 5600
"""Upper bound of one payload's JSON; sealed (padded, encrypted, base64) it stays under Postgres' 8000 bytes."""
_MAX_ERROR_CHARS = 300
_MAX_SUBJECTS = 20
_MAX_BATCH_ITEMS = 500


@overload
def stamp(when: dt.datetime) -> str: ...
@overload
def stamp(when: dt.datetime | None) -> str | None: ...
def stamp(when: dt.datetime | None) -> str | None:
    """A fixed-width UTC timestamp (``2026-11-27T03:43:13.123456Z``) that sorts as text."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def command_item(lean: dict[str, Any], status: str) -> dict[str, Any]:
    """The stream item of a command attempt from its lean row (``CommandRecord.lean()`` or a journal entry)."""
    when = lean.get("finished_at") if status != "started" else None
    when = when or lean["started_at"]
    error = lean.get("error_message")
    return {
        "kind": "command", "id": f"{lean['cmd_uuid']}:{status}", "at": _stamp_text(when),
        "tenant_id": lean["tenant_id"], "actor_id": lean["actor_id"], "cmd_uuid": str(lean["cmd_uuid"]),
        "cmd_class": lean["cmd_class"], "status": status, "correlation_id": _str(lean.get("correlation_id")),
        "causation_id": _str(lean.get("causation_id")), "replay_of": _str(lean.get("replay_of")),
        "draft_uuid": _str(lean.get("draft_uuid")), "subjects": list(lean.get("subjects") or [])[:_MAX_SUBJECTS],
        "error_type": lean.get("error_type"), "error_message": error[:_MAX_ERROR_CHARS] if error else None,
        "started_at": _stamp_text(lean["started_at"]),
    }


def event_item(command: dict[str, Any], *, event_uuid: uuid.UUID, event_type: str,
               occurred_at: dt.datetime) -> dict[str, Any]:
    """The stream item of a domain event, carrying its command's tenant, actor, class and correlation."""
    return {
        "kind": "event", "id": str(event_uuid), "at": _stamp_text(occurred_at), "tenant_id": command["tenant_id"],
        "actor_id": command["actor_id"], "cmd_uuid": command["cmd_uuid"], "cmd_class": command["cmd_class"],
        "correlation_id": command["correlation_id"], "subjects": command["subjects"], "event_type": event_type,
    }


def action_item(*, action_uuid: uuid.UUID, tenant_id: str, actor_id: str, action: str,
                correlation_id: uuid.UUID | None, occurred_at: dt.datetime) -> dict[str, Any]:
    """The stream item of a frontend action (its payload stays in the database)."""
    return {
        "kind": "frontend_action", "id": str(action_uuid), "at": _stamp_text(occurred_at), "tenant_id": tenant_id,
        "actor_id": actor_id, "action": action, "correlation_id": _str(correlation_id), "subjects": [],
    }


def record_items(record: CommandRecord, status: str) -> list[dict[str, Any]]:
    """Items of one bus record: the command, then (once it succeeded) its domain events."""
    item = command_item(record.lean(), status)
    events = [event_item(item, event_uuid=e.event_uuid, event_type=e.event_type, occurred_at=e.occurred_at)
              for e in (record.events if status == "succeeded" else [])]
    return [item, *events]


def pack(items: list[dict[str, Any]], *, limit: int = MAX_PAYLOAD_BYTES) -> list[str]:
    """JSON-array payloads of ``items``, each at most ``limit`` bytes (an oversized item is trimmed, not dropped)."""
    payloads: list[str] = []
    current: list[str] = []
    size = 2
    for item in items:
        text = _dumps(item)
        if len(text.encode()) + 2 > limit:
            text = _dumps({**item, "subjects": item.get("subjects", [])[:3], "error_message": None, "trimmed": True})
        n = len(text.encode()) + 1
        if current and size + n > limit:
            payloads.append("[" + ",".join(current) + "]")
            current, size = [], 2
        current.append(text)
        size += n
    if current:
        payloads.append("[" + ",".join(current) + "]")
    return payloads


class ActivityPublisher:
    """Sends items with ``NOTIFY`` from one background thread per process, on its own autocommit connection.

    ``publish`` only queues (a command never waits for a NOTIFY round trip); the thread sends what is queued in
    order, several hooks' items per round trip under load. ``flush`` waits until everything queued is sent; it runs
    at interpreter exit, so a CLI process that executes a command and exits still publishes it.
    """

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self._sender = NotifySender(url)
        self._seal: ChannelSeal | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def publish(self, items: list[dict[str, Any]]) -> None:
        """Queue ``items`` for sending (returns at once)."""
        if items:
            self._ensure_thread()
            self._queue.put(items)

    def publish_now(self, items: list[dict[str, Any]]) -> None:
        """Send ``items`` in this thread, one round trip; retries once on a fresh connection if the old one broke."""
        payloads = pack(items)
        if not payloads:
            return
        with self._lock:
            if self._seal is None:
                self._seal = ChannelSeal(self._sender.channel_key(), channel=self.channel)
            self._sender.send(self.channel, [self._seal.seal(p) for p in payloads])

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is sent; False on timeout."""
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def hook(self, status: str | None) -> Callable[[CommandRecord], None]:
        """A bus hook publishing the record with ``status`` (the record's own status when None)."""

        def publish_record(record: CommandRecord) -> None:
            # a finished record has its status (failed or rejected on the failed hooks)
            self.publish(record_items(record, status or record.status or "failed"))

        publish_record.__name__ = f"publish_{status or 'outcome'}"
        return publish_record

    def close(self) -> None:
        """Send what is queued, then close the connection."""
        self.flush()
        with self._lock:
            self._sender.close()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # a forked child gets its own thread and queue
                self._queue, self._pid = queue.SimpleQueue(), os.getpid()
                self._sender.forget()
                self._thread = threading.Thread(target=self._run, name="cmdlog-activity-publisher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch, markers = [], []
            entry = self._queue.get()
            while True:
                if isinstance(entry, threading.Event):
                    markers.append(entry)
                else:
                    batch += entry
                if len(batch) >= _MAX_BATCH_ITEMS:
                    break
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                self.publish_now(batch)
            except Exception:  # a lost notification costs live watchers an item; resuming from a cursor restores it
                log.exception("could not publish %d activity item(s)", len(batch))
            for marker in markers:
                marker.set()


_publishers: dict[tuple[str, str], ActivityPublisher] = {}
_installed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def publisher_for(url: str, *, channel: str = CHANNEL) -> ActivityPublisher:
    """The process-wide publisher of database ``url``."""
    with _lock:
        key = (url, channel)
        if key not in _publishers:
            _publishers[key] = ActivityPublisher(url, channel=channel)
        return _publishers[key]


@atexit.register
def flush_publishers(timeout: float = 5.0) -> None:
    """Send everything the process's publishers have queued (runs at interpreter exit)."""
    for publisher in list(_publishers.values()):
        publisher.flush(timeout)


def install_publisher(bus: CommandBus, *, channel: str = CHANNEL) -> ActivityPublisher:
    """Publish every live attempt of ``bus`` (started; succeeded with its events; failed/rejected). Idempotent."""
    with _lock:
        if bus in _installed:
            return _installed[bus]
    publisher = publisher_for(bus.db.url, channel=channel)
    with _lock:
        if bus not in _installed:
            bus.add_hook("started", publisher.hook("started"))
            bus.add_hook("succeeded", publisher.hook("succeeded"))
            bus.add_hook("failed", publisher.hook(None))
            _installed[bus] = publisher
        return _installed[bus]


def _stamp_text(value: object) -> str | None:
    if value is None or isinstance(value, dt.datetime):
        return stamp(value)
    return stamp(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _str(value: object) -> str | None:
    return None if value is None else str(value)
