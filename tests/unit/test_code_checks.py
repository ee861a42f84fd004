"""The checkers of ``make lint``, run as tests so that ``make test`` (and CI, which calls it) fails on a lint, type or
import-contract regression.

Each checker runs as a subprocess from the repository root with the virtualenv's own executable, as ``make lint``
runs it; its configuration is in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``, ``[tool.importlinter]``). The
assertion message is the checker's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # not resolved: a venv's python is a symlink to the base interpreter
PRODUCTION = ["commandlog", "storage", "tasks", "flows", "deployments", "examples"]  # as in the Makefile's lint


def _run_checker(tool: str, *args: str) -> None:
    exe = BIN / tool
    if not exe.exists():
        pytest.skip(f"{tool} is not installed next to {sys.executable} (`make install` installs the dev extra)")
    out = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail(f"`{' '.join((tool, *args))}` exited with {out.returncode}:\n{out.stdout}{out.stderr}",
                    pytrace=False)


def test_ruff_reports_nothing():
    _run_checker("ruff", "check", "--output-format", "concise")


@pytest.mark.slow  # about a minute from a cold cache (a fresh clone, CI); seconds once .mypy_cache exists
def test_mypy_reports_no_type_error():
    _run_checker("mypy", *PRODUCTION)


def test_import_contracts_hold():
    _run_checker("lint-imports")
