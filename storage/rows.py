"""The one row of a statement that always returns one (an aggregate, ``SHOW``, a function call).

DB-API ``fetchone()`` is typed ``row | None``; for these statements ``None`` would mean a broken driver or server,
so it is an error here instead of a ``TypeError`` on ``None[0]`` further on.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

_Row_co = TypeVar("_Row_co", covariant=True)
_T = TypeVar("_T")


class _Fetches(Protocol[_Row_co]):
    """A cursor (psycopg, DuckDB): ``fetchone`` returns the next row or ``None``."""

    def fetchone(self) -> _Row_co | None: ...


def one_row(cursor: _Fetches[_T]) -> _T:
    """The next row of ``cursor``; raises ``LookupError`` when the statement returned none."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the statement returned no row where it always returns one")
    return row
