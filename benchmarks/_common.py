"""What every benchmark shares: the repeat loop, the machine's load, percentiles, medians with their spread.

Each benchmark measures one run as a dict of figures (its baseline included), lets ``repeat`` run it N times
(printing every run as its own JSON line, with the 1-minute load average at its start and end), then prints one
final JSON line from ``summary``: the median of each key figure, ``spread`` (min and max of each over the runs),
the load averages (1, 5, 15 minutes) at the start and end of the whole benchmark, and the per-run lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable, Sequence


def loadavg() -> list[float]:
    """The machine's load average over 1, 5 and 15 minutes (``os.getloadavg``)."""
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def add_repeat_argument(parser: argparse.ArgumentParser, *, default: int = 3) -> None:
    """``--repeat N``: runs of the whole measurement (baseline included); medians and spread are reported."""
    parser.add_argument("--repeat", type=int, default=default,
                        help=f"runs of the measurement; medians and min/max are reported (default {default})")


def repeat(n: int, run: Callable[[int], dict], *, label: str) -> list[dict]:
    """Call ``run(i)`` for i in 0..n-1; print each run's figures as a JSON line with the load around it."""
    runs = []
    for i in range(n):
        start = loadavg()[0]
        figures = run(i)
        figures = {"benchmark": label, "run": i + 1, **figures, "load_start": start, "load_end": loadavg()[0]}
        print(json.dumps(figures), flush=True)
        runs.append(figures)
    return runs


def _round(x):
    return round(x, 3) if isinstance(x, float) else x


def summary(label: str, runs: list[dict], *, keys: Sequence[str], load_start: list[float],
            extra: dict | None = None) -> dict:
    """The final line: medians of ``keys`` over ``runs``, their min/max, load at start and end, ``extra``."""
    out: dict = {"benchmark": label, "repeat": len(runs)}
    out.update(extra or {})
    spread = {}
    for k in keys:
        values = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if not values:
            continue
        out[k] = _round(statistics.median(values))
        spread[k] = [_round(min(values)), _round(max(values))]
    out["spread"] = spread
    out["loadavg_start"] = load_start
    out["loadavg_end"] = loadavg()
    return out


def print_summary(*args, **kwargs) -> dict:
    """``summary`` printed as the benchmark's one final JSON line."""
    out = summary(*args, **kwargs)
    print(json.dumps(out), flush=True)
    return out
