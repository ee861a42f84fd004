"""Log rows with chosen times, durations, outcomes and actors (through the bus's history path), and the activity
figures those rows must give — computed here in plain Python, independently of the SQL under test."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from commandlog.context import ExecutionContext
from commandlog.records import HistoricalCommand
from examples.billing import commands as c
from storage.migrate import ensure_partitions_between

CLASSES = ("billing.CreateCustomer", "billing.RenameCustomer", "billing.RecordLogin", "billing.FinalizeInvoice",
           "billing.AttachCardToken")


@dataclass(frozen=True)
class Row:
    """One command to write."""

    tenant: str
    actor: str
    cmd_class: str
    started_at: dt.datetime
    duration_ms: int
    status: str


def hour_floor(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def plan(tenant: str, base: dt.datetime, *, hours: int, n: int, seed: int, actors: list[str],
         classes: tuple[str, ...] = CLASSES, skip_hours: tuple[int, ...] = ()) -> list[Row]:
    """``n`` commands spread over ``hours`` hours from ``base`` (none in ``skip_hours``), random but seeded."""
    rng = random.Random(seed)
    open_hours = [h for h in range(hours) if h not in skip_hours]
    rows = []
    for _ in range(n):
        start = base + dt.timedelta(hours=rng.choice(open_hours), seconds=rng.randrange(3600),
                                    microseconds=rng.randrange(1_000_000))
        status = rng.choices(("succeeded", "failed", "rejected"), weights=(8, 2, 1))[0]
        rows.append(Row(tenant=tenant, actor=rng.choice(actors), cmd_class=rng.choice(classes), started_at=start,
                        duration_ms=rng.randrange(1, 2000), status=status))
    return rows


def _command(cmd_class: str, i: int) -> c.Command:
    return {
        "billing.CreateCustomer": lambda: c.CreateCustomer(customer_id=i, name=f"C{i}", email=f"c{i}@x.example"),
        "billing.RenameCustomer": lambda: c.RenameCustomer(customer_id=i, name=f"R{i}"),
        "billing.RecordLogin": lambda: c.RecordLogin(user_id=f"u{i}"),
        "billing.FinalizeInvoice": lambda: c.FinalizeInvoice(invoice_id=i),
        "billing.AttachCardToken": lambda: c.AttachCardToken(customer_id=i, card_token=f"tok_{i:08d}"),
    }[cmd_class]()


def write(bus, rows: list[Row]) -> None:
    """Record ``rows`` through the batch path (one transaction), creating the partitions they need."""
    lo, hi = min(r.started_at for r in rows), max(r.started_at for r in rows)
    day = dt.timedelta(days=1)
    ensure_partitions_between(bus.db, f"'{(lo - day).date()}'", f"'{(hi + day).date()}'")
    bus.import_history([
        HistoricalCommand(command=_command(r.cmd_class, i + 1), context=ExecutionContext(tenant_id=r.tenant,
                                                                                          actor_id=r.actor),
                          started_at=r.started_at, finished_at=r.started_at + dt.timedelta(milliseconds=r.duration_ms),
                          status=r.status, error_type=None if r.status == "succeeded" else "BoomError",
                          error_message=None if r.status == "succeeded" else "boom")
        for i, r in enumerate(rows)])


def percentile_cont(values: list[float], p: float) -> float:
    """SQL's ``percentile_cont``: linear interpolation between the closest ranks."""
    xs = sorted(values)
    pos = p * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def expected(rows: list[Row], since: dt.datetime, hours: int, *, top: int = 10) -> dict:
    """The figures of ``rows`` over ``hours`` hour buckets from ``since``, keyed like the endpoint's answer."""
    buckets = [since + dt.timedelta(hours=h) for h in range(hours)]
    inside = [r for r in rows if since <= r.started_at < buckets[-1] + dt.timedelta(hours=1)]
    by_bucket = defaultdict(list)
    for r in inside:
        by_bucket[(hour_floor(r.started_at), r.cmd_class)].append(r)
    class_count = Counter(r.cmd_class for r in inside)
    classes = sorted(class_count, key=lambda k: (-class_count[k], k))
    total = [sum(1 for r in inside if hour_floor(r.started_at) == b) for b in buckets]
    failed = [sum(1 for r in inside if hour_floor(r.started_at) == b and r.status != "succeeded") for b in buckets]
    per_actor = Counter(r.actor for r in inside)
    actors = sorted(per_actor, key=lambda a: (-per_actor[a], a))[:top]
    return {
        "classes": classes,
        "commands": {k: [len(by_bucket[(b, k)]) for b in buckets] for k in classes},
        "total": total, "failed": failed,
        "failure_rate": [None if t == 0 else f / t for f, t in zip(failed, total, strict=True)],
        "p95_ms": {k: [percentile_cont([r.duration_ms for r in by_bucket[(b, k)]], 0.95) if by_bucket[(b, k)]
                       else None for b in buckets] for k in classes},
        "class_p95_ms": {k: percentile_cont([r.duration_ms for r in inside if r.cmd_class == k], 0.95)
                         for k in classes},
        "window_p95_ms": percentile_cont([r.duration_ms for r in inside], 0.95),
        "top_actors": [{"actor_id": a, "commands": per_actor[a],
                        "failed": sum(1 for r in inside if r.actor == a and r.status != "succeeded")}
                       for a in actors],
        "actors": len(per_actor),
    }


def assert_figures(body: dict, want: dict) -> None:
    """The endpoint's answer carries exactly the figures ``want`` (durations to the microsecond)."""
    assert body["classes"] == want["classes"]
    assert body["commands"] == want["commands"]
    assert body["total"] == want["total"] and body["failed"] == want["failed"]
    assert body["failure_rate"] == [None if r is None else round(r, 6) for r in want["failure_rate"]]
    assert body["p95_ms"].keys() == want["p95_ms"].keys()
    for k, series in want["p95_ms"].items():
        assert body["p95_ms"][k] == [None if v is None else _approx(v) for v in series], k
    summary = body["summary"]
    assert summary["commands"] == sum(want["total"]) and summary["failed"] == sum(want["failed"])
    assert summary["p95_ms"] == _approx(want["window_p95_ms"])
    assert {x["cmd_class"]: x["p95_ms"] for x in summary["classes"]} == {
        k: _approx(v) for k, v in want["class_p95_ms"].items()}
    assert summary["actors"] == want["actors"]
    assert body["top_actors"] == want["top_actors"]


def _approx(v: float):
    import pytest

    return pytest.approx(v, abs=0.002)
