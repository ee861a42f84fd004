"""Flow ``seal-log``: seals the log rows committed since the last run (signed, chained Merkle digests).

Changes: appends rows to ``log_seal`` (one per log table and partition with new rows; the log itself is only read),
creates the sealing key under ``CMDLOG_HOME`` on first use. Rerun-safe: a run commits all its seals or none, and the
next run starts where the last committed one stopped, so no row is sealed twice or skipped.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Completed, State

from tasks.seal import report_seal, seal_new_rows


@flow(name="seal-log", log_prints=True)
def seal_log() -> State:
    """Seal the new rows; ends Completed with the summary line as its message, the report as its data."""
    report = seal_new_rows()
    summary = report_seal(report)
    return Completed(message=summary, data=report)
