"""Flow ``export-snapshot``: exports the log rows committed since the last snapshot to the Parquet lake.

Changes: writes Parquet files and a manifest under the lake root, one ``export_snapshot`` ledger row per run
(plus one per compaction) and one ``export_unit`` row per unit of its work. The work is split per dataset × Postgres
leaf partition: on a work pool the run submits ``helpers`` runs of its own deployment (``units_of`` its snapshot),
which other workers take, and stages units itself meanwhile; elsewhere ``takers`` threads of this run stage them.
Rerun-safe: an interrupted run is finished by the next one (units done are kept, the others redone over the same
range), so no row is lost or exported twice; a helper run only ever stages units, never publishes.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Completed, State

from commandlog.journal.export_units import LEASE_S, TAKERS, check
from commandlog.settings import Settings
from tasks.export import compact_lake, export_lake, report_export, start_progress, take_export_units


@flow(name="export-snapshot", log_prints=True, validate_parameters=True)
def export_snapshot(lake_uri: str | None = None, compact: bool = True, min_files: int = 8,
                    takers: int = TAKERS, helpers: int = 1, lease_seconds: float = LEASE_S,
                    units_of: int | None = None) -> State:
    """Export new rows to the lake (``lake_uri`` or the configured lake), then compact (``run_compaction``).

    ``units_of``: be a helper of that running export instead (stage its units until none is left, then end).
    Ends Completed with the summary line as its message; calling the flow returns ``{lake, export, compaction}``.
    """
    check(takers=takers, lease_s=lease_seconds, helpers=helpers)  # before anything: the field named, nothing written
    lake = lake_uri or Settings.from_env().lake
    if units_of is not None:
        return Completed(message=take_export_units(lake, units_of, lease_s=lease_seconds))
    progress_id = start_progress()
    exported = export_lake(lake, progress_id=progress_id, takers=takers, helpers=helpers, lease_s=lease_seconds)
    compacted = compact_lake(lake, min_files=min_files, progress_id=progress_id) if compact else None
    summary = report_export(exported, compacted, progress_id=progress_id)
    return Completed(message=summary, data={"lake": lake, "export": exported, "compaction": compacted})
