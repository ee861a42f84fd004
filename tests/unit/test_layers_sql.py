"""SQL and the database driver stay in ``storage/``: nothing above it imports psycopg or SQLAlchemy, names a
driver exception, or holds a SQL statement in a string (STYLE.md, "Layering" and "Errors and bad input")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABOVE_STORAGE = ("commandlog", "tasks", "flows", "deployments")
DRIVERS = ("psycopg", "psycopg_pool", "sqlalchemy")
SQL_START = re.compile(
    r"^\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|WITH\s+\w+\s+AS\s|"
    r"(CREATE|ALTER|DROP)\s+(TABLE|INDEX|ROLE|DATABASE|VIEW)\s|LISTEN\s|NOTIFY\s|SET\s+(LOCAL|ROLE)\s)")


def _files() -> list[Path]:
    return sorted(p for top in ABOVE_STORAGE for p in (ROOT / top).rglob("*.py"))


def _literal_start(node: ast.AST) -> str | None:
    """The text a string literal starts with (an f-string's first constant part)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: what`` for each driver import, driver name or SQL string in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Name):
            names = [node.id]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in DRIVERS:
                found.append(f"{where}:{node.lineno}: driver {name!r} above storage/")
        text = _literal_start(node)
        if text is not None and SQL_START.match(text):
            found.append(f"{where}:{node.lineno}: SQL text above storage/: {text.strip()[:60]!r}")
    return sorted(set(found))


def test_no_driver_and_no_sql_above_storage():
    found = [v for path in _files() for v in violations(path)]
    assert not found, "move these into a storage/ repository:\n" + "\n".join(found)


@pytest.mark.parametrize(("source", "expected"), [
    ("import psycopg\n", "driver 'psycopg'"),
    ("from sqlalchemy import text\n", "driver 'sqlalchemy'"),
    ("def f(e):\n    return isinstance(e, psycopg.Error)\n", "driver 'psycopg'"),
    ("Q = 'SELECT 1 FROM command_log'\n", "SQL text"),
    ("def f(t):\n    return f'DELETE FROM {t} WHERE true'\n", "SQL text"),
    ("Q = '''\n  WITH v AS (SELECT 1) SELECT * FROM v'''\n", "SQL text"),
])
def test_the_check_finds_what_it_forbids(tmp_path, source, expected):
    path = tmp_path / "commandlog" / "bad.py"
    path.parent.mkdir()
    path.write_text(source)
    found = violations(path, tmp_path)
    assert found and expected in found[0] and found[0].startswith("commandlog/bad.py:")


def test_prose_that_mentions_sql_is_not_flagged(tmp_path):
    path = tmp_path / "commandlog" / "fine.py"
    path.parent.mkdir()
    path.write_text('HELP = "One SELECT over commands"\nDOC = "Select a tenant"\nMETHODS = {"DELETE"}\n')
    assert violations(path, tmp_path) == []
