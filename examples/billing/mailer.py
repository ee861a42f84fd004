"""Where the billing sample sends e-mail: an outbox by default, replaceable by a real sender."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Outbox:
    """An e-mail sender that keeps what it was asked to send (the demo's and the tests' sender)."""

    sent: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Record one message."""
        with self._lock:
            self.sent.append({"to": to, "subject": subject, "body": body})


mailer = Outbox()
"""The sender handlers use; tests swap in their own."""
