"""The seal head: the newest seal of each sealing run, recorded outside the database.

A chain of seals cannot show that its newest seals were deleted (the remaining chain is still intact), nor that
there are no seals at all. So every sealing run appends one JSON line to a head file next to the signing key
(``seal-head`` in the key's folder, mode 0600): ``{"seal_id", "seal_hash", "to_tx", "at"}`` — the newest seal's id
and hash (hex; null before the first seal) and the run's watermark (rows of transactions below ``to_tx`` are
sealable). ``cmdlog verify`` reads its last line and reports ``truncated`` when the database's chain ends before
that seal or the seal there has another hash, ``unsealed`` when there are no seals but rows below the watermark.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from commandlog.integrity import keys
from commandlog.integrity.errors import SealKeyError
from commandlog.settings import Settings
from storage.private import open_private, private_dir

HEAD_FILE = "seal-head"


@dataclass(frozen=True, kw_only=True)
class Head:
    """The newest seal a sealing run left (or the head an auditor expects)."""

    seal_id: int | None
    """The newest seal's id (None: no seal yet)."""
    seal_hash: bytes | None
    """Its hash."""
    to_tx: int | None = None
    """The run's watermark: every row of a transaction below it is sealable (None: not known)."""


def head_path(settings: Settings) -> Path:
    """The head file of ``settings``: ``seal-head`` next to the signing key."""
    return keys.key_path(settings).parent / HEAD_FILE


def record(settings: Settings, head: Head) -> None:
    """Append ``head`` as one JSON line to the head file (created 0600)."""
    path = head_path(settings)
    private_dir(path.parent, base=settings.home if settings.home in path.parents else path.parent)
    line = json.dumps({"seal_id": head.seal_id, "seal_hash": head.seal_hash.hex() if head.seal_hash else None,
                       "to_tx": head.to_tx, "at": datetime.now(UTC).isoformat()}, separators=(",", ":"))
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW)
    with os.fdopen(fd, "ab") as f:
        f.write(line.encode() + b"\n")


def read(settings: Settings) -> Head | None:
    """The last head recorded for ``settings`` (None when no run recorded one)."""
    path = head_path(settings)
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return None
    if not lines:
        return None
    try:
        d = json.loads(lines[-1])
        return Head(seal_id=d["seal_id"], seal_hash=bytes.fromhex(d["seal_hash"]) if d["seal_hash"] else None,
                    to_tx=d.get("to_tx"))
    except (ValueError, KeyError, TypeError) as e:
        raise SealKeyError(path, f"its last line is not a seal head ({e})") from e


def parse(text: str) -> Head:
    """``SEAL_ID:HASH`` (hash in hex) as an expected head; ``ValueError`` when it is not."""
    seal_id, _, digest = text.partition(":")
    value = bytes.fromhex(digest)
    if len(value) != 32:
        raise ValueError("the hash must be 32 bytes of hex")
    return Head(seal_id=int(seal_id), seal_hash=value)
