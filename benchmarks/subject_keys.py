"""Prototype of a narrow subject key table (issue 17, point 1): a tenant's subject page read as today vs from a key
table, on the same database, for the same subjects, interleaved.

    python -m benchmarks.subject_keys --database-url URL [--timelines 40] [--repeat 3] [--keep]

Measured on an existing journal database (e.g. ``bench_grow`` of ``benchmarks.journal --rows 20000000``). The
prototype table ``bench_subject_key (tenant_id, subject, started_at, cmd_uuid, retention)``, one row per subject of
each command, partitioned by month, with one b-tree ``(tenant_id, subject, started_at DESC, cmd_uuid DESC)`` and the
tenant policy (forced row-level security), is built from ``command_log`` unless it exists; ``--keep`` leaves it for
the next run (it is dropped otherwise). The schema of the platform is not changed.

Per subject, in the tenant's session: today's page (``timeline``: windows over the GIN of ``command_log``, then the
rows by key) and the prototype's (the page's keys by one ordered read of the key table — text equality is
leakproof, so the b-tree serves it below the policy — then the same rows-by-key and events statements as today).
The two pages must hold the same commands in the same order (asserted). ``today_p95_ms`` and ``proto_p95_ms``: p95
of each; ``proto_ratio``: proto p95 / today p95; ``proto_<phase>_p95_ms``: keys, rows (by key), events. What the
table costs the write path is measured by ``benchmarks.bus_overhead`` (``subject_keys_*``).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from psycopg.rows import dict_row

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
from storage import journal as j
from storage.postgres import Database

TABLE = "bench_subject_key"
_BUILD = f"""
CREATE TABLE {TABLE} (tenant_id text NOT NULL, subject text NOT NULL, started_at timestamptz NOT NULL,
    cmd_uuid uuid NOT NULL, retention text NOT NULL) PARTITION BY RANGE (started_at);
DO $$
DECLARE d date := date_trunc('month', (SELECT min(started_at) FROM command_log));
BEGIN
  WHILE d <= (SELECT max(started_at) FROM command_log) LOOP
    EXECUTE format('CREATE TABLE %I PARTITION OF {TABLE} FOR VALUES FROM (%L) TO (%L)',
                   '{TABLE}_' || to_char(d, 'YYYYMM'), d, (d + interval '1 month')::date);
    d := (d + interval '1 month')::date;
  END LOOP;
END $$;
INSERT INTO {TABLE} SELECT tenant_id, s, started_at, cmd_uuid, retention FROM command_log, unnest(subjects) AS s;
CREATE INDEX ON {TABLE} (tenant_id, subject, started_at DESC, cmd_uuid DESC);
SELECT cmdlog_apply_tenant_rls('{TABLE}'::regclass);
GRANT SELECT ON {TABLE} TO cmdlog_tenant;
ANALYZE {TABLE};
"""
_KEYS = (f"SELECT cmd_uuid, started_at FROM {TABLE} WHERE tenant_id = %s AND subject = %s "
         "ORDER BY started_at DESC, cmd_uuid DESC LIMIT %s")


def build(db: Database) -> float:
    """The key table from ``command_log`` unless it exists; the seconds it took (0 when it existed)."""
    with db.connection() as conn:
        if conn.execute("SELECT 1 FROM pg_class WHERE relname = %s", (TABLE,)).fetchall():
            return 0.0
        t0 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(_BUILD)
    return time.perf_counter() - t0


def proto_page(db: Database, tenant: str, subject: str, limit: int = 50) -> tuple[list[dict], dict[str, float]]:
    """The prototype's first page: keys from the key table, then today's rows-by-key and events statements."""
    ms: dict[str, float] = {}
    with db.tenant_session(tenant) as conn, conn.cursor(row_factory=dict_row) as cur:
        t0 = time.perf_counter()
        keys = cur.execute(_KEYS, (tenant, subject, limit + 1), prepare=True).fetchall()
        t1 = time.perf_counter()
        where, params = j._where(j.TimelineFilter(tenant_id=tenant, subject=subject), subject=False)
        # The keys span the whole history, as a tail's do: today's rows-by-key, whichever plan it picks.
        rows = j.rows_by_key(cur, where, params, keys, table="tenant_command_log", want=limit + 1, tail=True)
        rows = rows[:limit]
        t2 = time.perf_counter()
        if rows:
            j._events(cur, rows)
        t3 = time.perf_counter()
    ms.update(keys=(t1 - t0) * 1000, rows=(t2 - t1) * 1000, events=(t3 - t2) * 1000)
    return rows, ms


def measure(db: Database, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Each subject's first page both ways (alternating which goes first), the pages compared; p50/p95 in ms."""
    from commandlog.journal.entries import timeline

    ms: dict[str, list[float]] = {"today": [], "proto": [], "keys": [], "rows": [], "events": []}
    for i, (tenant, subject) in enumerate(pairs):
        pages: dict[str, list[str]] = {}
        for way in ("today", "proto") if i % 2 == 0 else ("proto", "today"):
            t0 = time.perf_counter()
            if way == "today":
                pages[way] = [e["cmd_uuid"] for e in timeline(db, tenant=tenant, subject=subject).entries]
            else:
                rows, phases = proto_page(db, tenant, subject)
                pages[way] = [str(r["cmd_uuid"]) for r in rows]
                for k, v in phases.items():
                    ms[k].append(v)
            ms[way].append((time.perf_counter() - t0) * 1000)
        assert pages["proto"] == pages["today"], f"the prototype's page of {tenant} {subject} differs from today's"
    out: dict[str, Any] = {}
    for way in ("today", "proto"):
        out[f"{way}_p95_ms"] = round(percentile(ms[way], 95), 2)
        out[f"{way}_p50_ms"] = round(percentile(ms[way], 50), 2)
    out["proto_ratio"] = round(out["proto_p95_ms"] / out["today_p95_ms"], 3)
    for k in ("keys", "rows", "events"):
        out[f"proto_{k}_p95_ms"] = round(percentile(ms[k], 95), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True, help="a journal database (e.g. bench_grow at 20M commands)")
    p.add_argument("--timelines", type=int, default=40, help="subjects (first pages) per run")
    p.add_argument("--keep", action="store_true", help=f"leave {TABLE} for the next run")
    add_repeat_argument(p)
    args = p.parse_args()
    load_start = loadavg()
    db = Database(url=args.database_url)
    try:
        built_s = build(db)
        with db.connection() as conn:
            commands = conn.execute("SELECT count(*) FROM command_log").fetchall()[0][0]
            sample = conn.execute("SELECT tenant_id, subjects FROM command_log TABLESAMPLE SYSTEM (0.05) "
                                  "REPEATABLE (9) WHERE cardinality(subjects) > 0").fetchall()
        rng = random.Random(3)
        pairs = [(t, rng.choice(s)) for t, s in rng.sample(sample, min(args.timelines, len(sample)))]
        for t, s in pairs[:3]:  # warm: pool, prepared statements, caches
            measure(db, [(t, s)])
        runs = repeat(args.repeat, lambda i: measure(db, pairs), label="subject_keys-run")
        if not args.keep:
            with db.connection() as conn:
                conn.execute(f"DROP TABLE {TABLE}")
    finally:
        db.close()
    print_summary("subject_keys", runs, load_start=load_start,
                  keys=[k for k in runs[0] if k.endswith(("_ms", "_ratio"))],
                  extra={"commands": commands, "subjects": len(pairs), "build_s": round(built_s, 1)})


if __name__ == "__main__":
    main()
