"""Startup time of ``cmdlog up --demo`` until every URL is ready, against a bare ``prefect server start``.

    python -m benchmarks.startup [--repeat 3] [--rows 20000]

Each run starts from an empty CMDLOG_HOME (cold: initdb, migrations, Prefect database, demo seed of ``--rows``
commands, Prefect server, served deployments, web app) and is timed from launch until ``up`` reports ready and
the Prefect API and the web app both answer; then the same home is started again (warm: everything exists, no
seeding). The baseline, measured in the same run, is a bare ``prefect server start`` (SQLite, fresh
PREFECT_HOME) until its health endpoint answers. Prints each run as a JSON line, then one final JSON line with
the medians and min/max over the runs and the load average at start and end; ``seconds`` is the cold median
(target ≤ 30 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._common import add_repeat_argument, loadavg, print_summary, repeat

BIN = Path(sys.executable).parent
TARGET_SECONDS = 30.0
PHASES = ("starting Postgres", "applying migrations", "demo:", "Prefect API ready", "web app ready", "ready in")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "CMDLOG_DATABASE_URL",
                                                            "CMDLOG_LAKE_URI", "PREFECT_HOME")}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen, *, group: bool) -> None:
    (os.killpg(proc.pid, signal.SIGTERM) if group else proc.send_signal(signal.SIGTERM))
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def time_prefect_server(workdir: Path) -> float:
    """Seconds from ``prefect server start`` to a healthy API (the baseline)."""
    port = _free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=_env(PREFECT_HOME=str(workdir / "prefect-home")), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not _ok(f"http://127.0.0.1:{port}/api/health"):
            if proc.poll() is not None or time.perf_counter() - start > 300:
                raise RuntimeError("prefect server start did not become ready")
            time.sleep(0.1)
        return time.perf_counter() - start
    finally:
        _stop(proc, group=True)


def time_up(home: Path, *, rows: int, phases: dict[str, float]) -> float:
    """Seconds from ``cmdlog up --demo`` to ready with both URLs answering; ``phases`` gets each step's time."""
    prefect_port, web_port = _free_port(), _free_port()
    out = home.parent / f"{home.name}.{time.time_ns()}.out"
    start = time.perf_counter()
    with open(out, "ab") as f:
        proc = subprocess.Popen([str(BIN / "cmdlog"), "up", "--demo", "--demo-commands", str(rows),
                                 "--prefect-port", str(prefect_port), "--web-port", str(web_port)],
                                env=_env(CMDLOG_HOME=str(home)), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        urls = (f"http://127.0.0.1:{prefect_port}/api/health", f"http://127.0.0.1:{web_port}/api/health")
        while True:
            text = out.read_text(errors="replace")
            for marker in PHASES:  # when each step was first reported, to see where the time goes
                if marker in text and marker not in phases:
                    phases[marker] = round(time.perf_counter() - start, 1)
            if "Press Ctrl-C" in text and all(_ok(u) for u in urls):
                return time.perf_counter() - start
            if proc.poll() is not None or time.perf_counter() - start > 300:
                raise RuntimeError(f"cmdlog up did not become ready:\n{text[-3000:]}")
            time.sleep(0.1)
    finally:
        _stop(proc, group=False)  # SIGTERM to up alone: it stops its own children


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup")
    add_repeat_argument(parser)
    parser.add_argument("--runs", dest="repeat", type=int, help=argparse.SUPPRESS)  # the former name
    parser.add_argument("--rows", type=int, default=20_000, help="Demo commands seeded by the cold start.")
    args = parser.parse_args(argv)
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="cmdlog-startup-") as tmp:
        def run(i: int) -> dict:
            run_dir = Path(tmp) / f"run{i}"
            run_dir.mkdir()
            base = time_prefect_server(run_dir)
            cold_phases: dict[str, float] = {}
            warm_phases: dict[str, float] = {}
            cold = time_up(run_dir / "home", rows=args.rows, phases=cold_phases)
            warm = time_up(run_dir / "home", rows=args.rows, phases=warm_phases)
            return {"seconds": round(cold, 2), "seconds_warm": round(warm, 2),
                    "baseline_prefect_server_seconds": round(base, 2), "ratio_to_baseline": round(cold / base, 2),
                    "cold_phases": cold_phases, "warm_phases": warm_phases}

        runs = repeat(args.repeat, run, label="startup-run")
    cold_median = statistics.median(r["seconds"] for r in runs)
    print_summary("startup", runs, load_start=load_start,
                  keys=("seconds", "seconds_warm", "baseline_prefect_server_seconds", "ratio_to_baseline"),
                  extra={"demo_commands": args.rows, "target_seconds": TARGET_SECONDS,
                         "meets_target": cold_median <= TARGET_SECONDS})


if __name__ == "__main__":
    main()
