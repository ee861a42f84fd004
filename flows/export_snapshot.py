"""Flow ``export-snapshot``: exports the log rows committed since the last snapshot to the Parquet lake.

Changes: writes Parquet files and a manifest under the lake root, one ``export_snapshot`` ledger row per run
(plus one per compaction). Rerun-safe: an interrupted run is finished (or redone over the same range) by the next
one, so no row is lost or exported twice.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Completed, State

from commandlog.settings import Settings
from tasks.export import compact_lake, export_lake, report_export, start_progress


@flow(name="export-snapshot", log_prints=True)
def export_snapshot(lake_uri: str | None = None, compact: bool = True, min_files: int = 8) -> State:
    """Export new rows to the lake (``lake_uri`` or the configured lake), then compact (``run_compaction``).

    Ends Completed with the summary line as its message; calling the flow returns ``{lake, export, compaction}``.
    """
    lake = lake_uri or Settings.from_env().lake
    progress_id = start_progress()
    exported = export_lake(lake, progress_id=progress_id)
    compacted = compact_lake(lake, min_files=min_files, progress_id=progress_id) if compact else None
    summary = report_export(exported, compacted, progress_id=progress_id)
    return Completed(message=summary, data={"lake": lake, "export": exported, "compaction": compacted})
