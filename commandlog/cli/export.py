"""``cmdlog export``: one export of the log to the Parquet lake (and a compaction of small files)."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, cast

import typer
from rich.table import Table

from commandlog.cli import _common


def export(
    lake: str | None = typer.Option(None, "--lake", help="Lake root (default: CMDLOG_LAKE_URI or $CMDLOG_HOME/lake)."),
    compact: bool = typer.Option(True, "--compact/--no-compact", help="Merge partitions that hold many files."),
    min_files: int = typer.Option(8, "--min-files", min=2,
                                  help="Compact the open day from this many files (closed days from two)."),
    via_prefect: bool = typer.Option(False, "--flow", help="Run it as the export-snapshot Prefect flow."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export the rows committed since the last snapshot; an interrupted earlier run is finished first."""
    s = _common.settings()
    uri = lake or s.lake
    if via_prefect:
        from flows.export_snapshot import export_snapshot  # noqa: PLC0415 — start-up cost: Prefect

        with _common.prefect_client(s):
            # The flow returns a Completed state; calling it yields the state's data (Prefect's types say State).
            result = cast(dict[str, Any], export_snapshot(lake_uri=uri, compact=compact, min_files=min_files))
        exported, compacted = result["export"], result["compaction"]
    else:
        from commandlog.journal.export import run_compaction, run_export  # noqa: PLC0415 — start-up cost: ADBC

        with _common.database(s) as db:
            exported = dataclasses.asdict(run_export(db, uri))
            compacted = dataclasses.asdict(run_compaction(db, uri, min_files=min_files)) if compact else None
    if as_json:
        sys.stdout.write(json.dumps({"lake": uri, "export": exported, "compaction": compacted}, default=str) + "\n")
        return
    table = Table(title=f"snapshot {exported['snapshot_id']} → {uri}")
    for col in ("dataset", "rows", "files"):
        table.add_column(col, justify="right" if col != "dataset" else "left")
    files: dict[str, int] = {}
    for p in exported["partitions"]:
        files[p["dataset"]] = files.get(p["dataset"], 0) + p["files"]
    for name, rows in exported["rows"].items():
        table.add_row(name, str(rows), str(files.get(name, 0)))
    _common.console.print(table)
    if exported["recovered"]:
        _common.console.print(f"finished interrupted snapshot(s) {exported['recovered']} first")
    if compacted and compacted["snapshot_id"]:
        _common.console.print(f"compaction (snapshot {compacted['snapshot_id']}): "
                              f"{compacted['replaced']} files merged into {compacted['files']}")
