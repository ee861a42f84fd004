"""Dry-run verdicts and the field-level diff (pure logic), and the replay request's validation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commandlog.context import EventRecord
from commandlog.records import Outcome
from commandlog.replay.diff import compare, field_diff, summarize
from commandlog.replay.service import ReplayRequest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10)


def outcome(status: str, result=None, events=(), error=(None, None)) -> Outcome:
    cmd = uuid.uuid4()
    evs = [EventRecord(event_uuid=uuid.uuid4(), cmd_uuid=cmd, event_type=t, payload=p,
                       occurred_at=datetime.now(UTC)) for t, p in events]
    return Outcome(cmd_uuid=cmd, status=status, result=result, events=evs, error_type=error[0],
                   error_message=error[1])


def test_same_result_and_events_is_reproduced():
    verdict, diffs = compare(original_status="succeeded", original_result={"a": 1},
                             original_events=[{"type": "Done", "payload": {"a": 1}}], original_error=(None, None),
                             outcome=outcome("succeeded", {"a": 1}, [("Done", {"a": 1})]))
    assert (verdict, diffs) == ("reproduced", [])


def test_a_changed_event_type_and_a_missing_event_are_diverged_fields():
    verdict, diffs = compare(original_status="succeeded", original_result=None,
                             original_events=[{"type": "A", "payload": {}}, {"type": "B", "payload": {}}],
                             original_error=(None, None), outcome=outcome("succeeded", None, [("C", {})]))
    assert verdict == "diverged"
    assert [(d["field"], d["change"]) for d in diffs] == [("events[0].type", "changed"), ("events[1]", "removed")]


def test_sub_command_events_are_not_compared_with_the_original_s_own_events():
    o = outcome("succeeded", None, [("Own", {})])
    o.events.append(EventRecord(event_uuid=uuid.uuid4(), cmd_uuid=uuid.uuid4(), event_type="OfChild", payload={},
                                occurred_at=datetime.now(UTC)))
    assert compare(original_status="succeeded", original_result=None, original_events=[{"type": "Own", "payload": {}}],
                   original_error=(None, None), outcome=o) == ("reproduced", [])


@pytest.mark.parametrize(("was", "now", "verdict"), [
    ("failed", "succeeded", "now_succeeds"), ("rejected", "succeeded", "now_succeeds"),
    ("succeeded", "failed", "now_fails")])
def test_a_status_change_is_named(was, now, verdict):
    assert compare(original_status=was, original_result=None, original_events=[], original_error=("E", "m"),
                   outcome=outcome(now, error=("E", "m")))[0] == verdict


def test_two_failures_differ_by_error():
    assert compare(original_status="failed", original_result=None, original_events=[], original_error=("E", "m"),
                   outcome=outcome("failed", error=("E", "m")))[0] == "reproduced"
    verdict, diffs = compare(original_status="failed", original_result=None, original_events=[],
                             original_error=("E", "m"), outcome=outcome("failed", error=("F", "m")))
    assert verdict == "diverged" and [d["field"] for d in diffs] == ["error_type"]


def test_json_types_are_compared_strictly_for_booleans():
    assert field_diff("r", True, 1, []) == [{"field": "r", "change": "changed", "original": True, "replay": 1}]
    assert field_diff("r", 1, 1.0, []) == []


def test_summarize_caps_the_list():
    diffs = [{"field": f"f{i}", "original": i, "replay": i + 1} for i in range(7)]
    assert summarize(diffs, limit=2) == "f0: 0 -> 1; f1: 1 -> 2; (+5 more)"


@given(json_values)
def test_a_value_never_differs_from_itself(value):
    assert field_diff("x", value, value, []) == []


@given(json_values, json_values)
def test_values_differ_exactly_when_the_diff_is_not_empty(a, b):
    same = a == b and _same_types(a, b)
    assert (field_diff("x", a, b, []) == []) == same


def _same_types(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


def test_a_naive_time_window_is_read_as_utc():
    request = ReplayRequest(since=datetime(2026, 1, 1), requested_by="ops")
    assert request.since == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="until: must be later than since"):
        ReplayRequest(since=datetime(2026, 1, 2), until=datetime(2026, 1, 1), requested_by="ops")
    with pytest.raises(ValueError, match="max_commands"):
        ReplayRequest(status="failed", max_commands=0, requested_by="ops")
