"""Activity statistics for the charts: commands per bucket by class, failure rate, p95 duration per class, top actors.

``activity`` answers for one tenant (its full log, under row-level security) or, with ``tenant=None``, for every
tenant (the lean global log: admin tokens and ``cmdlog journal report`` without ``--tenant``). The web endpoint
``GET /api/journal/stats``, the page's Activity view and ``cmdlog journal report --html`` all call it.

Where the figures come from (``source="auto"``):

- **Postgres** when the window starts within the last ``RECENT`` (48 hours), or when no lake was exported yet.
  The hourly export has not copied the newest rows yet, so a recent window would mostly come from Postgres anyway,
  and a tenant's 48 hours read through the ``(tenant_id, started_at)`` index touch at most three daily partitions.
- **The lake** otherwise (longer or older windows, whose cost on Postgres grows with the rows they cover): DuckDB
  over the Parquet files of the lake's newest manifest, plus the rows Postgres holds past that manifest's export
  bound (``tx_id >= to_tx``, the rows no export has copied yet), added to the lake's rows inside DuckDB. The export
  bound is a transaction id, not a time, so a row committed late (a slow transaction, a history import) is counted
  exactly once whatever its ``started_at``; the unexported rows are usually the last hour's.

``source="postgres"`` or ``"lake"`` forces one path (both give the same figures; tests compare them).

Limits (the web endpoint sets them; the CLI report runs without the first two):

- ``timeout_s``: each Postgres statement's ``statement_timeout`` (``CMDLOG_STATS_TIMEOUT``, 10 s for the web, see
  ``commandlog.settings``); past it ``StatsTimeoutError`` (503).
- ``lake_gate``: a ``LakeGate`` bounding how many lake connections (each up to 1 GB of DuckDB memory) are open at
  once in the process; a request finding no slot within its wait gets ``StatsBusyError`` (503).
- ``max_unexported``: at most this many rows are read from Postgres past the lake's export bound (``MAX_UNEXPORTED``);
  when the export is further behind, ``auto`` answers from Postgres alone and a forced ``lake`` is refused.

The Postgres reads go to the hot standby when one is configured and usable (``storage.replica.read``), as the
journal timelines do; the export bound is read on the primary (the export ledger). A lagging standby only misses
the newest rows: every row below the bound is in the lake, so none is counted twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from commandlog.errors import CommandLogError
from commandlog.journal.entries import InvalidFilterError, TimeBound, parse_time
from storage import journal_stats as store
from storage import replica as replicas
from storage.lake.datasets import Lake
from storage.lake.duckdb_journal import NoLakeError, UnknownTenantError, open_journal
from storage.lake.reports import activity_stats as lake_stats
from storage.postgres import Database

BUCKETS: dict[str, dt.timedelta] = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}
DEFAULT_SPAN = {"hour": dt.timedelta(hours=24), "day": dt.timedelta(days=30)}
"""The window when ``since`` is not given: the last 24 hours by hour, the last 30 days by day."""
MAX_BUCKETS = 1000
"""At most this many buckets in a window (42 days by hour, 2.7 years by day): the answer and the charts stay small."""
MAX_TOP = 50
"""At most this many actors in ``top_actors``."""
MAX_CLASS_SERIES = 8
"""Classes drawn one by one (the busiest); the others are summed into ``OTHER`` (counts only)."""
OTHER = "(other classes)"
RECENT = dt.timedelta(hours=48)
"""Windows starting this close to now are read from Postgres (``source="auto"``); see the module docstring."""
SOURCES = ("auto", "postgres", "lake")
Source = Literal["auto", "postgres", "lake"]
MAX_UNEXPORTED = 100_000
"""At most this many rows past the lake's export bound are loaded into a lake answer (see the module docstring)."""
StatsTimeoutError = store.StatsTimeoutError


class StatsBusyError(CommandLogError):
    """Every lake slot stayed taken for the whole wait: the server is answering as many lake windows as it may."""

    def __init__(self, slots: int, wait_s: float) -> None:
        self.slots, self.wait_s = slots, wait_s
        super().__init__(f"source: {slots} lake windows are being computed and none finished within {wait_s:g} s: "
                         f"try again shortly, or ask for a window in the last 48 hours (read from Postgres)")


class LakeGate:
    """At most ``slots`` lake connections open at once; a request waits up to ``wait_s`` s for one."""

    def __init__(self, *, slots: int = 2, wait_s: float = 5.0) -> None:
        if slots < 1 or wait_s < 0:
            raise ValueError("slots must be >= 1 and wait_s >= 0")
        self.slots, self.wait_s = slots, wait_s
        self._sem = threading.BoundedSemaphore(slots)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot (``StatsBusyError`` when none frees up within ``wait_s``)."""
        if not self._sem.acquire(timeout=self.wait_s):
            raise StatsBusyError(self.slots, self.wait_s)
        try:
            yield
        finally:
            self._sem.release()


@dataclass(frozen=True, kw_only=True)
class StatsWindow:
    """A checked window: bucket-aligned ``since <= started_at < until``."""

    since: dt.datetime
    """First bucket's start (UTC)."""
    until: dt.datetime
    """End of the last bucket (UTC, exclusive)."""
    bucket: str
    """``hour`` or ``day``."""

    @property
    def starts(self) -> list[dt.datetime]:
        """Every bucket's start, oldest first."""
        step, out, at = BUCKETS[self.bucket], [], self.since
        while at < self.until:
            out.append(at)
            at += step
        return out


@dataclass(kw_only=True)
class ActivityStats:
    """The figures of one window, ready for ``to_json``."""

    tenant_id: str | None
    """The tenant (None: every tenant, lean rows)."""
    window: StatsWindow
    """The window and its buckets."""
    source: str
    """``postgres`` or ``lake`` (the lake plus the rows not exported yet)."""
    lake_snapshot: int | None = None
    """The lake manifest read (lake source only)."""
    unexported_rows: int = 0
    """Rows read from Postgres past the lake's export bound (lake source only)."""
    classes: list[str] = field(default_factory=list)
    """The classes drawn one by one, busiest first (at most ``MAX_CLASS_SERIES``; then ``OTHER`` when any)."""
    commands: dict[str, list[int]] = field(default_factory=dict)
    """Commands per bucket for each of ``classes``."""
    total: list[int] = field(default_factory=list)
    """Commands per bucket, all classes."""
    failed: list[int] = field(default_factory=list)
    """Failed or rejected commands per bucket."""
    p95_ms: dict[str, list[float | None]] = field(default_factory=dict)
    """p95 duration (ms) per bucket for each drawn class (not ``OTHER``); None where the class ran nothing."""
    class_totals: list[dict[str, Any]] = field(default_factory=list)
    """Every class over the window: ``{cmd_class, commands, failed, p95_ms}``, busiest first."""
    window_p95_ms: float | None = None
    """p95 duration over the whole window, all classes."""
    top_actors: list[dict[str, Any]] = field(default_factory=list)
    """``{actor_id, commands, failed}``, busiest first."""
    actors: int = 0
    """Distinct actors in the window."""

    def to_json(self) -> dict[str, Any]:
        """The JSON answer of ``GET /api/journal/stats`` (also embedded in the HTML report)."""
        commands, failed = sum(self.total), sum(self.failed)
        return {
            "tenant_id": self.tenant_id, "since": _iso(self.window.since), "until": _iso(self.window.until),
            "bucket": self.window.bucket, "source": self.source, "lake_snapshot": self.lake_snapshot,
            "unexported_rows": self.unexported_rows,
            "buckets": [_iso(b) for b in self.window.starts],
            "classes": self.classes, "commands": self.commands, "total": self.total, "failed": self.failed,
            "failure_rate": [None if n == 0 else round(f / n, 6) for f, n in zip(self.failed, self.total,
                                                                                 strict=True)],
            "p95_ms": self.p95_ms,
            "summary": {"commands": commands, "failed": failed,
                        "failure_rate": None if commands == 0 else round(failed / commands, 6),
                        "p95_ms": self.window_p95_ms, "actors": self.actors, "classes": self.class_totals},
            "top_actors": self.top_actors,
        }


def window(*, since: TimeBound = None, until: TimeBound = None, bucket: str = "hour",
           now: Callable[[], dt.datetime] | None = None) -> StatsWindow:
    """Check and align a window: ``since`` floored and ``until`` ceiled to the bucket; errors name the field."""
    if bucket not in BUCKETS:
        raise InvalidFilterError("bucket", f"must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    step = BUCKETS[bucket]
    try:
        hi = parse_time("until", until)
        hi = _ceil(hi if hi is not None else (now or _now)(), step)
        lo = parse_time("since", since)
        lo = _floor(lo, step) if lo is not None else hi - DEFAULT_SPAN[bucket]
    except OverflowError:
        raise InvalidFilterError("until" if until is not None else "since",
                                 "is out of range (years 1 to 9999)") from None
    if lo >= hi:
        raise InvalidFilterError("until", "must be later than since")
    count = (hi - lo) // step
    if count > MAX_BUCKETS:
        raise InvalidFilterError("since", f"the window holds {count:,} {bucket} buckets, at most {MAX_BUCKETS:,}: "
                                          f"narrow since/until{' or use bucket=day' if bucket == 'hour' else ''}")
    return StatsWindow(since=lo, until=hi, bucket=bucket)


def activity(db: Database, *, tenant: str | None, since: TimeBound = None, until: TimeBound = None,
             bucket: str = "hour", top: int = 10, source: str = "auto", lake_uri: str | None = None,
             now: Callable[[], dt.datetime] | None = None, timeout_s: float | None = None,
             lake_gate: LakeGate | None = None, max_unexported: int = MAX_UNEXPORTED) -> ActivityStats:
    """The activity figures of ``tenant`` (None: every tenant, lean rows) over the window; see the module docstring.

    ``lake_uri``: the lake to read for long windows (None: Postgres only, as when nothing was exported yet).
    ``timeout_s``, ``lake_gate``, ``max_unexported``: the limits of the module docstring (None: none).
    """
    if tenant is not None and (not isinstance(tenant, str) or not tenant.strip()):
        raise InvalidFilterError("tenant", "must be a non-empty string")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise InvalidFilterError("top", f"must be an integer from 1 to {MAX_TOP}")
    if source not in SOURCES:
        raise InvalidFilterError("source", f"must be one of {', '.join(SOURCES)}, not {source!r}")
    win = window(since=since, until=until, bucket=bucket, now=now)
    if source == "lake" or (source == "auto" and win.since < (now or _now)() - RECENT):
        if lake_uri is None:
            if source == "lake":
                raise InvalidFilterError("source", "no lake is configured")
        else:
            with lake_gate.slot() if lake_gate is not None else contextlib.nullcontext():
                lake = _from_lake(db, lake_uri, tenant=tenant, win=win, top=top, forced=source == "lake",
                                  timeout_s=timeout_s, max_unexported=max_unexported)
            if lake is not None:
                return lake
    rows = replicas.read(db, lambda d: store.postgres_stats(
        d, tenant=tenant, since=win.since, until=win.until, bucket=cast(store.Bucket, win.bucket), top=top,
        timeout_s=timeout_s))
    return _assemble(rows, tenant=tenant, win=win, source="postgres")


def _from_lake(db: Database, lake_uri: str, *, tenant: str | None, win: StatsWindow, top: int,
               forced: bool, timeout_s: float | None, max_unexported: int) -> ActivityStats | None:
    """The figures from the lake plus the unexported rows; None (read Postgres) when the lake holds nothing of the
    tenant yet — then every row of it Postgres holds is past the export bound, or was purged from both sides — or
    when more than ``max_unexported`` rows are past the bound (and the lake is not ``forced``)."""
    lake = Lake(lake_uri)
    for _ in range(3):  # a manifest published between the reads below is retried: the bound must be the manifest's
        current = lake.manifest()
        try:
            if current is None:
                raise NoLakeError(f"nothing was exported to the lake at {lake_uri} yet")
            bound = store.export_bound_at(db, lake_uri, current[0])
            con = open_journal(lake, tenant=tenant, threads=2)
        except (NoLakeError, UnknownTenantError) as e:
            if forced:
                raise InvalidFilterError("source", str(e)) from None
            return None
        after = lake.manifest()
        if after is not None and after[0] == current[0]:
            break
        con.close()
    else:
        raise InvalidFilterError("source", "the lake changed three times while it was being opened: try again")
    try:
        tail = replicas.read(db, lambda d: store.unexported_rows(
            d, tenant=tenant, since=win.since, until=win.until, from_tx=bound, max_rows=max_unexported,
            timeout_s=timeout_s))
        if tail is None:
            if forced:
                raise InvalidFilterError("source", f"the lake's export is more than {max_unexported:,} rows behind "
                                                   f"in this window: use source=postgres or auto")
            return None
        rows = lake_stats(con, source="commands" if tenant is None else "tenant_commands", since=win.since,
                          until=win.until, bucket=win.bucket, top=top, unexported=tail)
    finally:
        con.close()
    stats = _assemble(rows, tenant=tenant, win=win, source="lake")
    stats.lake_snapshot, stats.unexported_rows = current[0], tail.num_rows
    return stats


def _assemble(rows: store.StatsRows, *, tenant: str | None, win: StatsWindow, source: str) -> ActivityStats:
    """Zero-filled series per bucket from the statements' rows (either engine)."""
    index = {b: i for i, b in enumerate(win.starts)}
    n = len(index)
    per_class: dict[str, tuple[int, int, float | None]] = {}
    total, failed = [0] * n, [0] * n
    detail: list[tuple[int, str, int, float | None]] = []
    window_p95 = None
    for bucket, cmd_class, level, commands, fails, p95 in rows.classes:
        if level == 0:
            detail.append((index[_utc(bucket)], cmd_class, int(commands), _ms(p95)))
        elif level == 1:
            i = index[_utc(bucket)]
            total[i], failed[i] = int(commands), int(fails)
        elif level == 2:
            per_class[cmd_class] = (int(commands), int(fails), _ms(p95))
        elif commands:
            window_p95 = _ms(p95)
    ranked = sorted(per_class, key=lambda c: (-per_class[c][0], c))
    drawn = ranked[:MAX_CLASS_SERIES]
    series = {c: [0] * n for c in drawn}
    p95s: dict[str, list[float | None]] = {c: [None] * n for c in drawn}
    for i, cmd_class, commands, p95 in detail:
        if cmd_class in series:
            series[cmd_class][i] = commands
            p95s[cmd_class][i] = p95
    if len(ranked) > MAX_CLASS_SERIES:
        series[OTHER] = [t - sum(series[c][i] for c in drawn) for i, t in enumerate(total)]
    return ActivityStats(
        tenant_id=tenant, window=win, source=source, classes=list(series), commands=series, total=total,
        failed=failed, p95_ms=p95s, window_p95_ms=window_p95,
        class_totals=[{"cmd_class": c, "commands": per_class[c][0], "failed": per_class[c][1],
                       "p95_ms": per_class[c][2]} for c in ranked],
        top_actors=[{"actor_id": a, "commands": int(c), "failed": int(f)} for a, c, f, _ in rows.actors],
        actors=int(rows.actors[0][3]) if rows.actors else 0)


def _utc(when: dt.datetime) -> dt.datetime:
    """A bucket start from either engine (Postgres: aware; DuckDB's lake views: naive UTC) as an aware UTC time."""
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _floor(when: dt.datetime, step: dt.timedelta) -> dt.datetime:
    when = when.astimezone(dt.UTC)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if step >= dt.timedelta(days=1) else when.replace(minute=0, second=0, microsecond=0)


def _ceil(when: dt.datetime, step: dt.timedelta) -> dt.datetime:
    floor = _floor(when, step)
    return floor if floor == when.astimezone(dt.UTC) else floor + step


def _iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
