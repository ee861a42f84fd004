"""Retention cleanup as one call: what ``cmdlog retention run`` and the ``retention-cleanup`` flow both run.

Partitions ahead first (a step of their own, before anything else: their ``ATTACH PARTITION`` statements then never
fall in the purge's window), then export (when a lake is in use), then purge — or, by default, only count. The
defaults (``DRY_RUN``, ``EXPORT_FIRST`` in ``policy``) are the only ones: the CLI's ``--dry-run/--purge`` and
``--export-first/--no-export-first`` and the flow's ``dry_run`` and ``export_first`` parameters take theirs from
there, so a run changes nothing unless its caller says ``dry_run=False`` (``--purge`` on the CLI, the daily
schedule's parameter).
"""

from __future__ import annotations

from datetime import datetime

from commandlog.bus import CommandBus
from commandlog.journal.export import run_export
from commandlog.retention.policy import DRY_RUN, EXPORT_FIRST, RetentionPolicy
from commandlog.retention.purge import FanOut, PurgeReport, run_purge
from commandlog.units import check
from storage.partitions import ensure_ahead
from storage.postgres import Database

DAYS_AHEAD = 14
"""Days of log partitions the cleanup keeps ahead (``storage.partitions.ensure_ahead``)."""


def ensure_partitions_ahead(db: Database, *, days: int = DAYS_AHEAD) -> int:
    """Create the missing log partitions from yesterday to ``days`` ahead (UTC days); returns how many.

    Each is created as a plain table and attached (``SHARE UPDATE EXCLUSIVE`` on its parent: writers neither wait
    nor queue), but every attach makes the writers rebuild the parent's partition descriptor, so it is a step of
    its own, run before the export and the purge rather than inside the purge's window."""
    return ensure_ahead(db.url, days=days)


def run_cleanup(db: Database, bus: CommandBus, policy: RetentionPolicy, *, dry_run: bool = DRY_RUN,
                export_first: bool = EXPORT_FIRST,
                lake_uri: str | None = None, as_of: datetime | None = None,
                fan: FanOut | None = None) -> PurgeReport:
    """Export new rows to ``lake_uri`` (unless a dry run, no lake or ``export_first=False``), then purge or count.

    Rerun-safe: the export resumes from the last snapshot and an interrupted purge is finished first. Partitions
    ahead are ensured first (``ensure_partitions_ahead``), in a dry run too. ``fan``: who takes the purge's units
    (``commandlog.retention.purge.FanOut``; checked before anything is done).
    """
    fan = fan or FanOut()
    check(takers=fan.takers, lease_s=fan.lease_s)
    ensure_partitions_ahead(db)
    if lake_uri and export_first and not dry_run:
        run_export(db, lake_uri, replica=False)  # retention works on the primary (storage.replica)
    return run_purge(db, bus, policy, as_of=as_of, lake_uri=lake_uri, dry_run=dry_run, fan=fan)

