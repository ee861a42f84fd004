"""``cmdlog demo``: sample activity from the billing app."""

from __future__ import annotations

import time

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from commandlog.cli import _common

app = typer.Typer(help="Demo data.", no_args_is_help=True)


@app.command("seed")
def seed(
    tenants: int = typer.Option(5, min=1, max=10_000, help="Number of tenants."),
    commands: int = typer.Option(5_000, min=1, max=50_000_000, help="Number of commands."),
    days: int = typer.Option(30, min=1, max=3650, help="Spread the commands over this many past days."),
    seed_: int = typer.Option(7, "--seed", help="Random seed (same seed, same activity)."),
) -> None:
    """Seed realistic billing activity (~2% failures) through the batch path."""
    from examples.billing.demo import seed as do_seed  # noqa: PLC0415 — start-up cost: the bus and its connection pool

    with _common.bus() as bus:
        start = time.perf_counter()
        with Progress(TextColumn("seeding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=_common.console, transient=False) as bar:
            task = bar.add_task("seed", total=commands)
            n = do_seed(bus, tenants=tenants, commands=commands, days=days, seed=seed_,
                        progress=lambda done: bar.update(task, completed=done))
        elapsed = time.perf_counter() - start
    _common.console.print(f"seeded {n} commands for {tenants} tenants over {days} days in {elapsed:.1f}s")
