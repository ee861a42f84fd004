"""Export units: a dataset's leaves grouped into at most ``UNITS_PER_CLASS`` ranges of consecutive leaves per class."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commandlog.journal.export_units import UNITS_PER_CLASS, ranges
from storage.export_units import LeafRange

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)


def _days(n: int) -> list[LeafRange]:
    return [LeafRange(retention="short_lived", lower=DAY0 + timedelta(days=k), upper=DAY0 + timedelta(days=k + 1))
            for k in range(n)]


def test_leaves_of_a_class_become_at_most_four_ranges_covering_them_in_order():
    months = [LeafRange(retention="long_lived", lower=datetime(2026, m, 1, tzinfo=UTC),
                        upper=datetime(2026, m + 1, 1, tzinfo=UTC)) for m in (1, 2)]
    leaves = months + [LeafRange(retention="permanent")] + _days(10)
    got = ranges(leaves)
    short = [r for r in got if r.retention == "short_lived"]
    assert UNITS_PER_CLASS == 4 and len(short) == 4
    assert [(r.upper - r.lower).days for r in short] == [3, 3, 3, 1]
    assert short[0].lower == DAY0 and short[-1].upper == DAY0 + timedelta(days=10)
    assert all(a.upper == b.lower for a, b in zip(short, short[1:], strict=False))  # no gap, no overlap
    assert [r for r in got if r.retention == "long_lived"] == months  # two leaves: two ranges
    assert [r for r in got if r.retention == "permanent"] == [LeafRange(retention="permanent")]


def test_few_leaves_stay_one_unit_each_and_none_give_none():
    assert ranges(_days(3)) == _days(3)
    assert ranges([]) == []
