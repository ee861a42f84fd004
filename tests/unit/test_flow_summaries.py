"""The one-line summaries the flows log and end with (built in the service layer, no Prefect needed)."""

from __future__ import annotations

from commandlog.drafts.review import ReviewResult
from commandlog.journal.export import summary_line as export_summary
from commandlog.replay.service import summary_line as replay_summary
from commandlog.retention.purge import summary_line as purge_summary


def test_replay_summary_counts_outcomes_most_frequent_first():
    counts = {"diverged": 10, "reproduced": 30, "now_succeeds": 12}
    assert replay_summary("dry_run", counts) == (
        "replay dry run: 52 commands — 30 reproduced, 12 now_succeeds, 10 diverged")
    assert replay_summary("execute", {"succeeded": 1}) == "replay: 1 command — 1 succeeded"
    assert replay_summary("execute", {}) == "replay: nothing selected"


def test_export_summary_counts_rows_files_and_datasets_with_rows():
    exported = {"snapshot_id": 17, "files": 37, "rows": {"commands": 12000, "tenant_commands": 300, "events": 45,
                                                         "frontend_actions": 0}}
    assert export_summary(exported) == "export: 12,345 rows in 37 files across 3 datasets, snapshot 17"
    compacted = {"snapshot_id": 18, "replaced": 9, "files": 1}
    assert export_summary(exported, compacted).endswith("; compaction merged 9 files into 1, snapshot 18")
    empty = {"snapshot_id": 19, "files": 0, "rows": {"commands": 0}}
    assert export_summary(empty, {"snapshot_id": None}) == "export: 0 rows in 0 files across 0 datasets, snapshot 19"


def test_purge_summary_says_dry_run_lake_and_purge_command():
    report = {"dry_run": True, "total_rows": 12000, "partitions_dropped": 3, "lake_uri": "/l", "purge_cmd_uuid": None,
              "counts": [{"table": "command_log", "rows": 12000}, {"table": "lake:commands", "rows": 40}]}
    assert purge_summary(report) == ("retention dry run: would purge 12,000 rows, 3 partitions dropped whole; "
                                     "lake /l: 40 rows")
    done = report | {"dry_run": False, "partitions_dropped": 1, "lake_uri": None, "purge_cmd_uuid": "0190-x"}
    assert purge_summary(done) == ("retention: purged 12,000 rows, 1 partition dropped whole; lake: none; "
                                   "logged as cmd 0190-x")
    reclaimed = done | {"reclaimed_bytes": 3 * 2**20 // 2, "reclaim_seconds": 0.4}
    assert purge_summary(reclaimed) == ("retention: purged 12,000 rows, 1 partition dropped whole; lake: none; "
                                        "logged as cmd 0190-x; 1.5 MB of files removed in 0.4 s")


def test_draft_summary_names_the_decider_and_the_executed_command():
    approved = ReviewResult(outcome="approved", message="m", draft_uuid="d1", cmd_uuid="c1", decided_by="op@acme")
    assert approved.to_json()["summary"] == "draft d1 approved by op@acme and executed as cmd c1"
    closed = ReviewResult(outcome="already_executed", message="draft d1 already executed as c1", draft_uuid="d1")
    assert closed.summary() == "draft d1 already executed: draft d1 already executed as c1"
