"""The test server's clock is the test process's clock.

Tests mix times taken in Python (the bus stamps ``started_at``) with times taken by Postgres (``now()`` defaults,
``current_date`` in partition creation). Under ``tests/faketime.sh`` this is also the proof that the fake clock
reached the server: an unfaked server would be weeks or months away from the test process.
"""

from __future__ import annotations

import datetime as dt

SLACK = dt.timedelta(seconds=1)


def test_the_servers_clock_agrees_with_the_test_process(db):
    with db.connection() as conn:
        before = dt.datetime.now(dt.UTC)
        server = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        after = dt.datetime.now(dt.UTC)
    assert before - SLACK <= server <= after + SLACK, (before, server, after)
