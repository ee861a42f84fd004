"""Sealed activity notifications: AES-256-GCM, so that only the platform's writers make items the hub delivers and a
database role that ``LISTEN``\\ s (Postgres cannot forbid it) reads nothing.

A sealed payload is ``s1.`` + base64(nonce ‖ ciphertext ‖ tag). The nonce (12 bytes) is the sealing time in
microseconds (8 bytes) and 4 random bytes: unique per message, and — being authenticated by GCM — a trustworthy
time. The plaintext (the JSON array of items) is padded with spaces to a multiple of ``PAD`` bytes, so lengths
say little about the items. The channel name is the associated data.

``open`` refuses (``UnsealError`` with a ``reason``) anything not sealed with the key (``unsealed``, ``forged``),
sealed more than ``WINDOW_S`` seconds away from this machine's clock (``stale``) or already opened (``replayed``):
a role that captured a genuine payload cannot make watchers see it twice.

    CommandLogError
     └── UnsealError        a notification does not authenticate; ``reason`` says how
"""

from __future__ import annotations

import base64
import binascii
import collections
import os
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from commandlog.errors import CommandLogError

PREFIX = "s1."
PAD = 512
"""Plaintexts are padded to a multiple of this many bytes."""
WINDOW_S = 300.0
"""A payload sealed further than this from the receiver's clock is refused (clock skew between machines counts)."""
_NONCE = 12
_TAG = 16


class UnsealError(CommandLogError):
    """A notification does not authenticate: it was not sealed with the key, is stale or was seen before."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"activity notification refused: {reason}")


def sealed_size(plaintext_bytes: int) -> int:
    """Bytes of the sealed payload of a plaintext of ``plaintext_bytes`` bytes."""
    padded = plaintext_bytes + (-plaintext_bytes % PAD)
    return len(PREFIX) + 4 * -(-(_NONCE + padded + _TAG) // 3)


class ChannelSeal:
    """Seals and opens the payloads of one channel with one 32-byte key (one instance per process and channel)."""

    def __init__(self, key: bytes, *, channel: str) -> None:
        if len(key) != 32:
            raise ValueError(f"key: must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._aad = channel.encode()
        self._seen: set[bytes] = set()
        self._seen_order: collections.deque[tuple[float, bytes]] = collections.deque()

    def seal(self, plaintext: str) -> str:
        """The sealed payload of ``plaintext`` (a JSON text)."""
        data = plaintext.encode()
        data += b" " * (-len(data) % PAD)
        nonce = (time.time_ns() // 1000).to_bytes(8, "big") + os.urandom(4)
        return PREFIX + base64.b64encode(nonce + self._aead.encrypt(nonce, data, self._aad)).decode("ascii")

    def open(self, payload: str) -> str:
        """The plaintext of a sealed payload; raises UnsealError unless it is genuine, fresh and new."""
        if not payload.startswith(PREFIX):
            raise UnsealError("unsealed")
        try:
            raw = base64.b64decode(payload[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise UnsealError("unsealed") from None
        if len(raw) < _NONCE + _TAG:
            raise UnsealError("unsealed")
        nonce = raw[:_NONCE]
        try:
            data = self._aead.decrypt(nonce, raw[_NONCE:], self._aad)
        except InvalidTag:
            raise UnsealError("forged") from None
        sealed_at, now = int.from_bytes(nonce[:8], "big") / 1e6, time.time()
        if abs(now - sealed_at) > WINDOW_S:
            raise UnsealError("stale")
        self._forget_before(now - WINDOW_S)
        if nonce in self._seen:
            raise UnsealError("replayed")
        self._seen.add(nonce)
        self._seen_order.append((sealed_at, nonce))
        return data.decode()

    def _forget_before(self, horizon: float) -> None:
        # Nonces older than the window need no memory: their payloads are refused as stale.
        order = self._seen_order
        while order and order[0][0] < horizon:
            self._seen.discard(order.popleft()[1])
