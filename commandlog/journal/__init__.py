"""Journal: the activity journal on Postgres, the lake export and the DuckDB analytics over it."""

from commandlog.journal.entries import (
    MAX_LIMIT,
    STATUSES,
    InvalidFilterError,
    JournalError,
    TimelinePage,
    decode_cursor,
    encode_cursor,
    parse_time,
    timeline,
)

__all__ = [
    "MAX_LIMIT",
    "STATUSES",
    "InvalidFilterError",
    "JournalError",
    "TimelinePage",
    "decode_cursor",
    "encode_cursor",
    "parse_time",
    "timeline",
]
