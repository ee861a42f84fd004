"""The activity statistics' pure parts: window checks and alignment, series assembly (the "other classes" series),
the HTML report's embedding of hostile text, the export's markdown summary."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time

import pytest

from commandlog.journal.entries import InvalidFilterError
from commandlog.journal.export_report import MAX_PARTITION_ROWS, export_markdown
from commandlog.journal.stats import (
    MAX_BUCKETS,
    MAX_CLASS_SERIES,
    OTHER,
    LakeGate,
    StatsBusyError,
    _assemble,
    window,
)
from commandlog.web.report import render_html
from storage.journal_stats import StatsRows

T0 = dt.datetime(2026, 3, 4, 10, 0, tzinfo=dt.UTC)


def test_a_window_is_aligned_to_its_buckets():
    w = window(since="2026-03-04T10:17:05Z", until="2026-03-04T13:00:01+01:00", bucket="hour")
    assert (w.since, w.until) == (T0, dt.datetime(2026, 3, 4, 13, tzinfo=dt.UTC))
    assert w.starts == [T0, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)]
    days = window(since="2026-03-01", until="2026-03-04T00:00:00", bucket="day")
    assert len(days.starts) == 3 and days.starts[0] == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_default_windows_end_at_the_next_bucket_boundary_after_now():
    assert window(now=lambda: T0 + dt.timedelta(minutes=1)).since == T0 - dt.timedelta(hours=23)
    by_day = window(bucket="day", now=lambda: T0)
    assert by_day.until == dt.datetime(2026, 3, 5, tzinfo=dt.UTC) and len(by_day.starts) == 30


@pytest.mark.parametrize(("kw", "field"), [
    ({"bucket": "week"}, "bucket"),
    ({"since": "soon"}, "since"),
    ({"since": 12}, "since"),
    ({"since": "2026-03-04T10:00:00Z", "until": "2026-03-04T10:00:00Z"}, "until"),
    ({"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since"),
    ({"since": "0001-01-01T00:00:00Z", "bucket": "day"}, "since"),
    ({"until": "9999-12-31T23:59:00Z", "bucket": "day"}, "until"),
])
def test_bad_windows_name_the_field(kw, field):
    with pytest.raises(InvalidFilterError) as e:
        window(**{"until": "2026-03-04T12:00:00Z", **kw})
    assert e.value.field == field


def test_the_bucket_bound_is_inclusive():
    w = window(since=T0, until=T0 + dt.timedelta(hours=MAX_BUCKETS))
    assert len(w.starts) == MAX_BUCKETS
    with pytest.raises(InvalidFilterError, match="bucket=day"):
        window(since=T0, until=T0 + dt.timedelta(hours=MAX_BUCKETS + 1))


def test_classes_past_the_series_limit_are_summed_into_one_series():
    w = window(since=T0, until=T0 + dt.timedelta(hours=2))
    classes = [f"app.C{i:02d}" for i in range(MAX_CLASS_SERIES + 3)]
    detail = [(T0 + dt.timedelta(hours=h), c, 0, 20 - i + h, h, 10.0 * i) for i, c in enumerate(classes)
              for h in range(2)]
    per_bucket = [(T0 + dt.timedelta(hours=h), None, 1, sum(r[3] for r in detail if r[0].hour == 10 + h), h, 5.0)
                  for h in range(2)]
    per_class = [(None, c, 2, 41 - 2 * i, 1, 10.0 * i) for i, c in enumerate(classes)]
    rows = StatsRows(classes=[*detail, *per_bucket, *per_class, (None, None, 3, 999, 2, 7.5)],
                     actors=[("ann", 30, 1, 4), ("bob", 20, 0, 4)])
    stats = _assemble(rows, tenant="acme", win=w, source="postgres").to_json()
    assert stats["classes"] == [*classes[:MAX_CLASS_SERIES], OTHER]
    drawn = sum(stats["commands"][c][0] for c in classes[:MAX_CLASS_SERIES])
    assert stats["commands"][OTHER] == [stats["total"][0] - drawn, stats["total"][1] - drawn - MAX_CLASS_SERIES]
    assert sum(stats["commands"][OTHER]) == sum(r[3] for r in detail if r[1] in classes[MAX_CLASS_SERIES:])
    assert OTHER not in stats["p95_ms"] and len(stats["p95_ms"]) == MAX_CLASS_SERIES
    assert stats["failure_rate"] == [0.0, round(1 / stats["total"][1], 6)]
    assert [c["cmd_class"] for c in stats["summary"]["classes"]] == classes  # every class in the totals table
    assert stats["summary"]["p95_ms"] == 7.5 and stats["summary"]["actors"] == 4
    assert stats["top_actors"][0] == {"actor_id": "ann", "commands": 30, "failed": 1}


def test_the_html_report_embeds_hostile_names_as_data():
    w = window(since=T0, until=T0 + dt.timedelta(hours=1))
    evil = "</script><script>alert(1)</script>&amp;"
    rows = StatsRows(classes=[(T0, evil, 0, 1, 0, 2.0), (T0, None, 1, 1, 0, 2.0), (None, evil, 2, 1, 0, 2.0),
                              (None, None, 3, 1, 0, 2.0)], actors=[(evil, 1, 0, 1)])
    page = render_html(_assemble(rows, tenant=evil, win=w, source="postgres").to_json())
    assert evil not in page
    data = re.search(r'<script type="application/json" id="activity-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data)["classes"] == [evil] and json.loads(data)["top_actors"][0]["actor_id"] == evil
    assert "<script src" not in page and "https://" not in page.split("<script>")[0]


def test_the_export_summary_lists_datasets_partitions_and_the_compaction():
    parts = [{"dataset": "commands", "partition": f"retention=long_lived/day=2026-03-{d:02d}", "files": 2,
              "rows": 100 + d} for d in range(1, MAX_PARTITION_ROWS + 4)]
    parts.append({"dataset": "tenant_commands", "partition": "tenant_id=a|b/retention=x", "files": 1, "rows": 500})
    exported = {"snapshot_id": 7, "from_tx": 10, "to_tx": 20, "files": sum(p["files"] for p in parts),
                "rows": {"commands": sum(p["rows"] for p in parts[:-1]), "tenant_commands": 500, "events": 0},
                "partitions": parts, "recovered": [6]}
    md = export_markdown(exported, {"snapshot_id": 8, "replaced": 9, "files": 3})
    assert md.startswith("## Export snapshot 7\n")
    assert f"**{sum(exported['rows'].values()):,} rows** in **{exported['files']} files**" in md
    assert f"| commands | {exported['rows']['commands']:,} | {2 * (MAX_PARTITION_ROWS + 3)} | " \
           f"{MAX_PARTITION_ROWS + 3} |" in md
    assert "| events | 0 | 0 | 0 |" in md
    assert "| … | 4 more partitions |" in md  # the 4 quietest commands partitions
    assert "a\\|b" in md and "interrupted run(s) first: 6" in md
    assert "merged 9 files into 3" in md
    assert "Compaction: nothing to merge." in export_markdown({**exported, "partitions": [], "files": 0,
                                                                "rows": {"commands": 0}}, {"snapshot_id": None})


def test_the_lake_gate_admits_its_slots_and_refuses_the_next_after_its_wait():
    gate = LakeGate(slots=2, wait_s=0.05)
    with gate.slot(), gate.slot():
        started = time.monotonic()
        with pytest.raises(StatsBusyError, match=r"^source: 2 lake windows are being computed"), gate.slot():
            pass
        assert time.monotonic() - started >= 0.04
    with gate.slot(), gate.slot():  # both were given back, even after the refusal
        pass


def test_a_slot_freed_during_the_wait_is_taken():
    gate = LakeGate(slots=1, wait_s=5.0)
    held, done = threading.Event(), threading.Event()

    def other() -> None:
        with gate.slot():
            held.set()
            time.sleep(0.1)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert held.wait(5)
    with gate.slot():
        assert done.is_set()  # admitted only once the other request let go
    thread.join()


@pytest.mark.parametrize(("value", "ok"), [("2.5", True), ("0", False), ("-1", False), ("soon", False),
                                           ("inf", False)])
def test_the_stats_timeout_setting_is_checked(value, ok):
    from commandlog.errors import ConfigurationError
    from commandlog.settings import Settings

    if ok:
        assert Settings.from_env({"CMDLOG_STATS_TIMEOUT": value}).stats_timeout_s == 2.5
    else:
        with pytest.raises(ConfigurationError, match="CMDLOG_STATS_TIMEOUT"):
            Settings.from_env({"CMDLOG_STATS_TIMEOUT": value})
    assert Settings.from_env({}).stats_timeout_s == 10.0
