"""Partitions made ahead (``ensure_ahead``): the UTC days from yesterday to the window's end exist, whatever the
server's TimeZone — the leaves are cut at UTC midnight, a session's ``current_date`` may be a day off."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg import sql

from storage.partitions import PURGEABLE_CLASSES, TIME_COLUMN, ensure_ahead, list_partitions

DAY = dt.timedelta(days=1)


# UTC+14 and UTC-12: at any time of day one of them has a current_date other than the UTC day.
@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12"])
def test_partitions_ahead_cover_yesterday_to_a_week_ahead_in_utc_whatever_the_servers_time_zone(
        database_factory, zone):
    url = database_factory()
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TIME_COLUMN:  # start from no leaves at all: the migration made some already
            for retention in PURGEABLE_CLASSES:
                for leaf in list_partitions(conn, table, retention):
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(leaf.name)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(
            sql.Identifier(conn.info.dbname), sql.Literal(zone)))
    before = dt.datetime.now(dt.UTC).date()
    ensure_ahead(url, days=7)
    after = dt.datetime.now(dt.UTC).date()  # differs from ``before`` when the call straddled midnight
    wanted = [after - DAY + k * DAY for k in range((before + 7 * DAY - (after - DAY)).days + 1)]
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW TimeZone").fetchone()[0] == zone
        for table in TIME_COLUMN:
            days = {leaf.lower.date() for leaf in list_partitions(conn, table, "short_lived")}
            months = {(leaf.lower.year, leaf.lower.month) for leaf in list_partitions(conn, table, "long_lived")}
            assert set(wanted) <= days, (table, sorted(days))
            assert {(d.year, d.month) for d in wanted} <= months, (table, sorted(months))
