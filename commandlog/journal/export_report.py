"""The export run's figures as markdown: the ``export-snapshot-summary`` artifact the export flow publishes.

Built from the ``ExportResult``s as JSON maps (what the flow's tasks pass on), so it is tested without Prefect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_PARTITION_ROWS = 20
"""The busiest partitions listed; the rest are summed in one line (an artifact is a summary, not a listing)."""


def export_markdown(exported: Mapping[str, Any], compacted: Mapping[str, Any] | None = None) -> str:
    """Rows and files per dataset, the busiest partitions, files per million rows and the compaction, in markdown."""
    rows, parts = exported["rows"], exported["partitions"]
    total = sum(rows.values())
    files = {name: sum(p["files"] for p in parts if p["dataset"] == name) for name in rows}
    out = [f"## Export snapshot {exported['snapshot_id']}", "",
           f"Transactions `{exported.get('from_tx')}` ≤ tx < `{exported.get('to_tx')}`: **{total:,} rows** in "
           f"**{exported['files']:,} files** across {len(parts):,} partitions"
           + (f" ({_per_million(exported['files'], total)} files per million rows)." if total else "."), ""]
    if exported.get("recovered"):
        out += [f"Finished interrupted run(s) first: {', '.join(map(str, exported['recovered']))}.", ""]
    out += ["| dataset | rows | files | partitions |", "|---|---:|---:|---:|"]
    for name, n in rows.items():
        out.append(f"| {_cell(name)} | {n:,} | {files[name]:,} | "
                   f"{sum(1 for p in parts if p['dataset'] == name):,} |")
    if parts:
        busiest = sorted(parts, key=lambda p: (-p["rows"], p["dataset"], p["partition"]))
        out += ["", "Busiest partitions:", "", "| dataset | partition | rows | files |", "|---|---|---:|---:|"]
        out += [f"| {_cell(p['dataset'])} | `{_cell(p['partition'])}` | {p['rows']:,} | {p['files']:,} |"
                for p in busiest[:MAX_PARTITION_ROWS]]
        rest = busiest[MAX_PARTITION_ROWS:]
        if rest:
            out.append(f"| … | {len(rest):,} more partitions | {sum(p['rows'] for p in rest):,} | "
                       f"{sum(p['files'] for p in rest):,} |")
    out.append("")
    if compacted and compacted.get("snapshot_id"):
        out.append(f"Compaction (snapshot {compacted['snapshot_id']}): merged {compacted['replaced']:,} files into "
                   f"{compacted['files']:,}.")
    else:
        out.append("Compaction: nothing to merge." if compacted is not None else "Compaction: not run.")
    return "\n".join(out) + "\n"


def _per_million(files: int, rows: int) -> str:
    return f"{files * 1_000_000 / rows:,.1f}"


def _cell(text: object) -> str:
    """Text safe inside a markdown table cell (and a code span): no pipe, backtick or line break."""
    return str(text).replace("|", "\\|").replace("`", "'").replace("\n", " ")
