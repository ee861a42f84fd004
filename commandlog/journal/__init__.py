"""Journal: the activity journal on Postgres, the lake export and the DuckDB analytics over it."""

from commandlog.journal.entries import (
    STATUSES, MAX_LIMIT, JournalError, InvalidFilterError, TimelinePage, encode_cursor, decode_cursor, timeline, parse_time,
)

__all__ = [
    "STATUSES", "MAX_LIMIT", "JournalError", "InvalidFilterError", "TimelinePage", "encode_cursor", "decode_cursor",
    "timeline", "parse_time",
]
