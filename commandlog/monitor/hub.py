"""``ActivityHub``: one ``LISTEN`` connection per process, each ``NOTIFY`` parsed once and fanned out in memory.

Subscriptions hold a bounded queue of ready-to-send frames. The listener never waits for a watcher: when a
subscription's queue is full it is marked overflowed and its sender closes the socket (a slow client is dropped,
the others are not slowed). No database read happens per subscriber or per message; the tenant fence and the
filters are checked against the item in memory.

Every payload is opened with the channel's key (``commandlog.monitor.channel_seal``) before it is parsed: any database
role may ``NOTIFY`` on the channel, so a payload that does not authenticate (not sealed with the key, stale, replayed)
is dropped, counted in ``rejected`` and logged at debug level.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging

from commandlog.monitor.channel_seal import ChannelSeal, UnsealError
from commandlog.monitor.filters import ActivityFilter
from commandlog.monitor.publisher import CHANNEL
from commandlog.validation import dumps
from storage.notify import Listener

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 1000


class Subscription:
    """One watcher: its filter, a bounded queue of ``(ids, cursor, items JSON)`` and an event its sender waits on."""

    def __init__(self, activity_filter: ActivityFilter, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.filter = activity_filter
        self.max_queue = max_queue
        self.frames: collections.deque[tuple[list[str], str, str]] = collections.deque()
        self.wakeup = asyncio.Event()
        self.dropped = asyncio.Event()  # set on overflow: the socket is closed even if a send is stuck
        self.overflowed = False
        self.lost_listener = False
        self.heartbeat_due = False

    def offer(self, items: list[tuple[dict, str]],
              cache: dict[ActivityFilter, tuple[list[str], str, str] | None] | None = None) -> None:
        """Queue the items of one notification that pass the filter (never blocks; overflow marks the watcher).

        ``cache`` (one per notification) shares the selection between watchers with equal filters.
        """
        if self.overflowed:
            return
        key = self.filter
        if cache is not None and key in cache:
            batch = cache[key]
        else:
            batch = select(items, key)
            if cache is not None:
                cache[key] = batch
        if batch is None:
            return
        if len(self.frames) >= self.max_queue:
            self.overflowed = True
            self.frames.clear()
            self.dropped.set()
        else:
            self.frames.append(batch)
        self.wakeup.set()

    def listener_lost(self) -> None:
        """The process lost its LISTEN connection: items may be missing, the watcher must resume from its cursor."""
        self.lost_listener = True
        self.wakeup.set()


def select(items: list[tuple[dict, str]], activity_filter: ActivityFilter) -> tuple[list[str], str, str] | None:
    """``(ids, cursor, items JSON)`` of the items passing ``activity_filter``; None when none does."""
    accepts = activity_filter.accepts
    selected = [pair for pair in items if accepts(pair[0])]
    if not selected:
        return None
    if len(selected) == 1:
        item, text = selected[0]
        return [item["id"]], item["at"], text
    return ([item["id"] for item, _ in selected], max(item["at"] for item, _ in selected),
            ",".join(text for _, text in selected))


def activity_frame(batches: list[tuple[list[str], str, str]]) -> str:
    """One ``activity`` message carrying the items of ``batches`` (queued notifications are sent together)."""
    cursor = max(cursor for _, cursor, _ in batches)
    return ('{"type":"activity","cursor":' + json.dumps(str(cursor)) + ',"items":['
            + ",".join(items for _, _, items in batches) + "]}")


class ActivityHub:
    """The process's listener on ``channel`` and its subscriptions."""

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.subscriptions: set[Subscription] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.notifications = 0
        self.rejected = 0
        """Notifications dropped because they did not authenticate."""
        self._seal: ChannelSeal | None = None
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._listener: Listener | None = None

    async def start(self) -> None:
        """Connect and ``LISTEN`` (returns once listening)."""
        if self._task is None:
            self.loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="cmdlog-activity-listener")
        await asyncio.wait_for(self._ready.wait(), timeout=30)

    @property
    def running(self) -> bool:
        """True while the listener task is alive in the current event loop."""
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return self._task is not None and not self._task.done() and self.loop is current

    def subscribe(self, subscription: Subscription) -> Subscription:
        """Start delivering to ``subscription``."""
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription``."""
        self.subscriptions.discard(subscription)

    def dispatch(self, payload: str) -> None:
        """Open and parse one notification payload once and offer its items to every subscription."""
        assert self._seal is not None, "notifications are dispatched only once the listener holds the channel key"
        try:
            payload = self._seal.open(payload)
        except UnsealError as e:
            self.rejected += 1
            log.debug("dropped an activity notification that does not authenticate (%s, %d bytes)", e.reason,
                      len(payload))
            return
        try:
            parsed = json.loads(payload)
        except json.JSONDecodeError:
            log.warning("ignoring a malformed activity notification (%d bytes)", len(payload))
            return
        items = [(item, dumps(item)) for item in parsed
                 if isinstance(item, dict) and "id" in item and "at" in item]
        if not items:
            return
        self.notifications += 1
        cache: dict[ActivityFilter, tuple[list[str], str, str] | None] = {}
        for subscription in tuple(self.subscriptions):
            subscription.offer(items, cache)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._listener is not None:
            await self._listener.close()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                self._listener = await Listener.connect(self.url, self.channel)
                if self._seal is None:  # kept across reconnects: it remembers the nonces already opened
                    self._seal = ChannelSeal(await self._listener.channel_key(), channel=self.channel)
                await self._listener.listen()
                self._ready.set()
                delay = 0.2
                async for payload in self._listener.payloads():
                    self.dispatch(payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the connection broke: watchers may have missed items, tell them, reconnect
                log.warning("activity listener lost its connection (%s); reconnecting", e)
            self._ready.clear()
            for subscription in tuple(self.subscriptions):
                subscription.listener_lost()
            if self._listener is not None:
                await self._listener.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
