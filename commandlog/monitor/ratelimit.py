"""A per-key token bucket in memory (one per web process): ``RateLimiter.check(key)`` raises ``RateLimitedError``.

Per process, not per cluster: with N replicas a token gets at most N times the rate, which is what a guard against
a runaway frontend needs; no shared state, no database write per request.

    CommandLogError
     └── RateLimitedError      the key used up its budget (``retry_after`` seconds until the next request fits)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from commandlog.errors import CommandLogError, ConfigurationError


class RateLimitedError(CommandLogError):
    """Too many requests for this token (or client); ``retry_after`` says when to try again."""

    def __init__(self, retry_after: float, *, who: str = "this token") -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limit exceeded for {who}; retry after {retry_after:.1f} s")


class RateLimiter:
    """``rate`` requests per second per key, bursts up to ``burst``."""

    def __init__(self, *, rate: float = 20.0, burst: int = 100, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> RateLimiter:
        """From ``CMDLOG_API_RATE`` = ``"<per second>,<burst>"`` (default ``20,100``)."""
        return cls.from_setting(os.environ, "CMDLOG_API_RATE", "20,100")

    @classmethod
    def from_setting(cls, env: Mapping[str, str], name: str, default: str) -> RateLimiter:
        """From the setting ``name`` of the mapping ``env`` = ``"<per second>,<burst>"`` (``default`` when unset)."""
        raw = env.get(name) or default
        try:
            rate, burst = raw.split(",")
            return cls(rate=float(rate), burst=int(burst))
        except ValueError as e:
            raise ConfigurationError(f"{name} must read '<per second>,<burst>', not {raw!r}") from e

    def check(self, key: str, cost: float = 1.0, *, who: str = "this token") -> None:
        """Take ``cost`` from ``key``'s bucket or raise RateLimitedError."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                raise RateLimitedError((cost - tokens) / self.rate, who=who)
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._buckets.clear()  # a crude bound on memory: forgetting buckets only ever lets requests in
            self._buckets[key] = (tokens - cost, now)

    def ensure(self, key: str, *, who: str = "this token") -> None:
        """Raise RateLimitedError when ``key`` has not one request left, taking nothing (a check before the work)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            raise RateLimitedError((1.0 - tokens) / self.rate, who=who)
