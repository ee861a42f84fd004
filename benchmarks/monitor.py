"""Commit-to-client latency of the live monitor: 50 WebSocket clients while commands run at 200 per second.

    python -m benchmarks.monitor [--rows 2000] [--clients 50] [--rate 200] [--repeat 3] [--deflate]

``--rows`` is the number of commands per run (2000 = 10 s at 200/s). Each run measures, on the same 50 clients,
(1) the baseline: a minimal Starlette app under the same uvicorn that LISTENs on a plain psycopg connection and
sends every raw NOTIFY payload to every socket (no auth, filter, backfill) and (2) the real app
(``commandlog.web.app:create_app``: bearer tokens, tenant fence, filters, bounded queues). Both see the same
NOTIFYs, published by the bus's hooks in this process. Latency = client receive time - the moment the command's
``succeeded`` hook starts (i.e. right after COMMIT), per client per command. Servers and clients run in their own
processes. Each of the ``--repeat`` runs measures both servers (alternating which goes first) and prints its own
JSON line. Ends with one JSON line: the medians and min/max over the runs of p50_ms, p99_ms and
p99_ratio_to_baseline (of the real app), lost and duplicated summed over the runs, and the load average at the
start and end.
Uses a throwaway embedded Postgres unless CMDLOG_BENCH_DATABASE_URL names a database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks._common import add_repeat_argument, loadavg, percentile, print_summary, repeat
from commandlog.auth.tokens import create_token
from commandlog.bus import CommandBus
from commandlog.context import ExecutionContext
from commandlog.monitor.publisher import CHANNEL, install_publisher
from examples.billing import commands as c
from examples.billing import setup
from storage.postgres import Database, open_database

TENANT = "bench-monitor"


# -- the baseline server ---------------------------------------------------------------------------------------

def baseline_app():
    """The thinnest pipeline on the same stack: LISTEN on one psycopg connection, send each payload to every socket."""
    import psycopg
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    from commandlog.monitor.channel_seal import ChannelSeal
    from storage.channel_key import load_key_async

    sockets: set = set()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        conn = await psycopg.AsyncConnection.connect(os.environ["CMDLOG_DATABASE_URL"], autocommit=True)
        # Payloads are sealed (commandlog.monitor.channel_seal): opening them is part of the thinnest pipeline too.
        seal = ChannelSeal(await load_key_async(conn), channel=CHANNEL)
        await conn.execute(f'LISTEN "{CHANNEL}"')

        async def broadcast():
            async for notify in conn.notifies():
                payload = seal.open(notify.payload).rstrip()
                for ws in tuple(sockets):
                    try:
                        await ws.send_text(payload)
                    except Exception:
                        sockets.discard(ws)

        task = asyncio.create_task(broadcast())
        yield
        task.cancel()
        await conn.close()

    async def endpoint(ws):
        await ws.accept()
        sockets.add(ws)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            sockets.discard(ws)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


# -- the clients (own process) -----------------------------------------------------------------------------------

async def run_clients(url: str, tokens: list[str], out: str) -> None:
    """Connect one socket per token, record (cmd_uuid, receive time) of succeeded commands until 'stop' on stdin."""
    from websockets.asyncio.client import connect

    received: list[list[tuple[str, float]]] = [[] for _ in tokens]
    compression = None if os.environ.get("BENCH_NO_DEFLATE") else "deflate"
    sockets = [await connect(url, additional_headers={"Authorization": f"Bearer {t}"}, max_queue=None,
                             ping_interval=None, compression=compression) for t in tokens]

    async def read(i: int, ws) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                now = time.time()
                if "succeeded" not in message:
                    continue
                data = json.loads(message)
                items = data if isinstance(data, list) else data.get("items", ())
                received[i] += [(it["cmd_uuid"], now) for it in items
                                if it.get("kind") == "command" and it.get("status") == "succeeded"]

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*readers, return_exceptions=True)
    Path(out).write_text(json.dumps(received))


# -- the driver ------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(factory: str, env: dict, port: int):
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", factory, "--port", str(port),
                             "--log-level", "warning", "--no-access-log"], env=env)
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{factory} exited with {proc.returncode}") from None
                time.sleep(0.1)
        if factory.endswith("create_app"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=30)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def run_once(db: Database, bus: CommandBus, commit_times: dict, *, real: bool, tokens: list[str], rows: int,
             rate: float, env: dict, tmp: str) -> dict:
    port = _free_port()
    factory = "commandlog.web.app:create_app" if real else "benchmarks.monitor:baseline_app"
    url = f"ws://127.0.0.1:{port}/ws/activity?kinds=command" if real else f"ws://127.0.0.1:{port}/ws"
    out = str(Path(tmp) / f"received-{'real' if real else 'base'}-{time.time_ns()}.json")
    with serve(factory, env, port):
        clients = subprocess.Popen([sys.executable, "-m", "benchmarks.monitor", "--child-clients", url, "--out", out],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env={**env, "BENCH_TOKENS": ",".join(tokens)})
        assert clients.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        sent = drive(bus, rows=rows, rate=rate)
        time.sleep(2.0)
        clients.stdin.write("stop\n")
        clients.stdin.flush()
        clients.wait(timeout=60)
    received = json.loads(Path(out).read_text())
    latencies, lost, duplicated = [], 0, 0
    for per_client in received:
        seen: dict[str, int] = {}
        for cmd_uuid, t in per_client:
            seen[cmd_uuid] = seen.get(cmd_uuid, 0) + 1
            if cmd_uuid in sent and seen[cmd_uuid] == 1:
                latencies.append((t - commit_times[cmd_uuid]) * 1000)
        lost += sum(1 for u in sent if u not in seen)
        duplicated += sum(n - 1 for u, n in seen.items() if u in sent)
    lost += (len(tokens) - len(received)) * len(sent)
    return {"p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
            "deliveries": len(latencies), "lost": lost, "duplicated": duplicated}


def drive(bus: CommandBus, *, rows: int, rate: float) -> set[str]:
    """Execute ``rows`` commands at ``rate`` per second; returns their ids."""
    ctx = ExecutionContext(tenant_id=TENANT, actor_id="bench")
    sent: set[str] = set()
    start = time.monotonic()
    for i in range(rows):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent.add(str(bus.execute(c.RenameCustomer(customer_id=1, name=f"n{i}"), ctx).cmd_uuid))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="commands per run (at --rate per second)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    add_repeat_argument(parser)
    parser.add_argument("--deflate", action="store_true",
                        help="clients negotiate permessage-deflate, as browsers do (zlib per socket per message, "
                             "on both servers alike); off by default: the benchmark measures the pipeline")
    parser.add_argument("--child-clients", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_clients:
        asyncio.run(run_clients(args.child_clients, os.environ["BENCH_TOKENS"].split(","), args.out))
        return
    load_start = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(os.environ.get("CMDLOG_BENCH_DATABASE_URL"), home=Path(tmp), dbname="bench")
        try:
            runs = measure(db, args, tmp)
        finally:
            db.close()
    print_summary("monitor", runs, load_start=load_start,
                  keys=("p50_ms", "p99_ms", "p99_ratio_to_baseline", "baseline_p50_ms", "baseline_p99_ms"),
                  extra={"clients": args.clients, "rate_per_s": args.rate, "commands": args.rows,
                         "deflate": args.deflate, "lost": sum(r["lost"] for r in runs),
                         "duplicated": sum(r["duplicated"] for r in runs),
                         "baseline_lost": sum(r["baseline_lost"] for r in runs)})


def measure(db: Database, args, tmp: str) -> list[dict]:
    bus = setup(CommandBus(db))
    commit_times: dict[str, float] = {}
    lock = threading.Lock()

    def committed(record) -> None:  # registered before the publisher: runs first, right after COMMIT
        with lock:
            commit_times[str(record.cmd_uuid)] = time.time()

    bus.add_hook("succeeded", committed)
    install_publisher(bus)
    with db.connection() as conn:
        conn.execute("INSERT INTO billing.customer (tenant_id, customer_id, name, email) VALUES (%s, 1, 'B', 'b@x.io') "
                     "ON CONFLICT DO NOTHING", (TENANT,))
    drive(bus, rows=200, rate=1000)  # warm-up: prepared statements, pool
    tokens = [create_token(db, tenant=TENANT, role="viewer") for _ in range(args.clients)]
    env = {**os.environ, "CMDLOG_DATABASE_URL": db.url, "CMDLOG_HOME": str(Path(tmp) / "home"),
           "CMDLOG_API_RATE": "1000,1000", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if not args.deflate:
        env["BENCH_NO_DEFLATE"] = "1"

    def one_run(n: int) -> dict:
        figures = {}
        for real in ((False, True) if n % 2 == 0 else (True, False)):
            figures["monitor" if real else "baseline"] = run_once(
                db, bus, commit_times, real=real, tokens=tokens, rows=args.rows, rate=args.rate, env=env, tmp=tmp)
        m, b = figures["monitor"], figures["baseline"]
        return {**m, "baseline_p50_ms": b["p50_ms"], "baseline_p99_ms": b["p99_ms"],
                "p99_ratio_to_baseline": round(m["p99_ms"] / b["p99_ms"], 3), "baseline_lost": b["lost"],
                "baseline_deliveries": b["deliveries"]}

    return repeat(args.repeat, one_run, label="monitor-run")


if __name__ == "__main__":
    main()
