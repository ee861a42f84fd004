"""Pure logic of the journal: the opaque cursor, time parsing, filter validation, report SQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commandlog.journal.analytics import REPORTS, report_sql
from commandlog.journal.entries import InvalidFilterError, decode_cursor, encode_cursor, parse_time

aware = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1),
                     timezones=st.just(dt.UTC))


@given(aware, st.uuids())
def test_cursor_round_trips(when, ident):
    assert decode_cursor(encode_cursor(when, ident)) == (when, ident)


@given(st.text(max_size=80))
def test_any_other_cursor_is_a_named_error_not_a_crash(garbage):
    try:
        when, ident = decode_cursor(garbage)
    except InvalidFilterError as e:
        assert e.field == "cursor"
    else:  # astronomically unlikely, but then it must be a well-formed cursor
        assert when.tzinfo is not None and isinstance(ident, uuid.UUID)


def test_naive_cursor_times_are_refused():
    import base64
    import json

    raw = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", str(uuid.uuid4())]).encode()).decode()
    with pytest.raises(InvalidFilterError, match="cursor"):
        decode_cursor(raw)


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-03-04", dt.datetime(2026, 3, 4, tzinfo=dt.UTC)),
    ("2026-03-04T05:06:07Z", dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)),
    ("2026-03-04T05:06:07+02:00", dt.datetime(2026, 3, 4, 3, 6, 7, tzinfo=dt.UTC)),
    (dt.date(2026, 3, 4), dt.datetime(2026, 3, 4, tzinfo=dt.UTC)),
    (None, None),
])
def test_times_accept_dates_datetimes_and_iso_strings(value, expected):
    assert parse_time("since", value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", 12, 1.5])
def test_unusable_times_name_the_field(value):
    with pytest.raises(InvalidFilterError) as err:
        parse_time("until", value)
    assert err.value.field == "until" and "until" in str(err.value)


def test_report_sql_is_the_same_text_for_the_lake_and_postgres_but_the_relation_day_keys_and_lake_forms():
    from storage.lake.reports import LAKE_REPORTS

    since, until = dt.datetime(2026, 1, 1, 5, tzinfo=dt.UTC), dt.datetime(2026, 1, 3, 7, tzinfo=dt.UTC)
    for name in REPORTS:
        lake = report_sql(name, source="commands", since=since, until=until)
        pg = report_sql(name, source="command_log", since=since, until=until)
        assert "2026-01-01 05:00:00" in lake and "2026-01-01 05:00:00" in pg
        # over the lake the window also bounds the day partitions (inclusive of the window's last day)
        assert "day >= CAST('2026-01-01' AS date)" in lake and "day <= CAST('2026-01-03' AS date)" in lake
        assert "day >=" not in pg and "day <=" not in pg
        plain = (lake.replace(" AND day >= CAST('2026-01-01' AS date)", "")
                 .replace(" AND day <= CAST('2026-01-03' AS date)", ""))
        if name in LAKE_REPORTS:
            assert "command_log" not in plain and plain != pg.replace("command_log", "commands")
        else:
            assert plain == pg.replace("command_log", "commands")
    assert "day" not in report_sql("command_mix", source="commands")  # no window, nothing pruned
