"""Writers running while a test reads the log: three threads, one tenant each, executing billing commands."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

from commandlog import ExecutionContext
from examples.billing import commands as c


def write(bus, tenant: str, n: int, start: int = 1) -> None:
    """``n`` ``CreateCustomer`` commands for ``tenant``, customer ids from ``start``."""
    ctx = ExecutionContext(tenant_id=tenant, actor_id=f"bob@{tenant}")
    for i in range(start, start + n):
        bus.execute(c.CreateCustomer(customer_id=i, name=f"C{i}", email=f"c{i}@x.example"), ctx)


@contextlib.contextmanager
def writers_running(bus, *, threads: int = 3) -> Iterator[list[int]]:
    """Writers committing one command at a time until the block ends; yields the list their counts land in (filled
    when the block exits, after every writer stopped)."""
    stop = threading.Event()
    counts: list[int] = []

    def writer(k: int) -> None:
        tenant = f"w{k}-{uuid.uuid4().hex[:6]}"
        i = 1
        while not stop.is_set():
            write(bus, tenant, 1, start=i)
            i += 1
        counts.append(i)

    workers = [threading.Thread(target=writer, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    try:
        yield counts
    finally:
        stop.set()
        for t in workers:
            t.join()
