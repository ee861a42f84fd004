"""Where an export reads: one repeatable-read snapshot, on the replica when it is configured and caught up."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from storage import replica as replicas
from storage.lake.arrow_export import SnapshotReader
from storage.postgres import Database

log = logging.getLogger(__name__)


@contextlib.contextmanager
def read_snapshot(db: Database, *, replica: bool, covering: int = 0) -> Iterator[tuple[SnapshotReader, str]]:
    """``(reader, "replica" | "primary")``: a snapshot on the replica when asked for and usable (and, with
    ``covering``, when its ``xmin`` reaches that bound — a run started on the primary may be ahead of the standby),
    else on the primary.

    Without ``covering`` (a new run's range) the replica is used once it replayed what the primary had written
    (``storage.replica.snapshot_url``); with it (a unit, a resumed run) its ``xmin`` alone decides: the range is
    closed, so waiting for the standby to replay later writes would only slow every unit down."""
    if not replica:
        url = db.url
    elif covering:
        url = db.replica.url if db.replica is not None and db.replica.usable(db) else db.url
    else:
        url = replicas.snapshot_url(db)
    if url != db.url:
        with SnapshotReader(url) as reader:
            if reader.xmin() >= covering:
                yield reader, "replica"
                return
        log.warning("the replica's snapshot does not cover the run (xmin below %d): reading the primary", covering)
    with SnapshotReader(db.url) as reader:
        yield reader, "primary"
