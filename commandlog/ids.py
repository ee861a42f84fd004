"""Time-ordered UUIDs (version 7, RFC 9562): b-tree inserts stay append-only and the id carries its time."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime


class _Monotonic:
    """This process's last millisecond handed out and the counter within it, changed only under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.seq = 0


_state = _Monotonic()


def uuid7(at: datetime | None = None) -> uuid.UUID:
    """A UUIDv7 for now (monotonic within this process) or for the given time."""
    random = int.from_bytes(os.urandom(10), "big")  # one system call per id: the counter's seed and the tail
    if at is not None:
        ms = int(at.timestamp() * 1000)
        rand = random
    else:
        with _state.lock:
            ms = time.time_ns() // 1_000_000
            if ms <= _state.last_ms:
                ms = _state.last_ms
                _state.seq += 1
            else:
                _state.seq = (random >> 64) & 0x3FF
            _state.last_ms = ms
            rand = ((_state.seq & 0xFFF) << 62) | (random & ((1 << 62) - 1))
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0x2 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def uuid7_time(u: uuid.UUID) -> datetime:
    """The millisecond timestamp stored in a UUIDv7."""
    return datetime.fromtimestamp((u.int >> 80) / 1000, tz=UTC)
