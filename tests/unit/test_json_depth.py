"""The one nesting rule for client JSON (``commandlog.command_json``): 64 levels pass, 65 and absurd depths are
refused with an error naming the field, never a RecursionError."""

from __future__ import annotations

import json

import pytest

from commandlog.command_json import MAX_DEPTH, check_depth, loads
from commandlog.errors import JsonNestingError


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_up_to_the_limit_is_accepted_and_one_more_level_is_refused():
    assert MAX_DEPTH == 64
    assert loads(_nested(64)) == json.loads(_nested(64))
    check_depth({"a": [{"b": 1}]})
    with pytest.raises(JsonNestingError, match=r"^body: nesting deeper than 64 levels$"):
        loads(_nested(65))


@pytest.mark.parametrize("text", [_nested(100_000), '{"a":' * 5000 + "1" + "}" * 5000])
def test_absurdly_deep_json_names_the_field_instead_of_a_recursion_error(text):
    with pytest.raises(JsonNestingError) as info:
        loads(text, field="payload")
    assert info.value.errors == [{"field": "payload", "message": "nesting deeper than 64 levels"}]


def test_parsed_values_of_any_depth_are_measured_without_recursion():
    value: dict = {}
    for _ in range(5000):
        value = {"a": value}
    with pytest.raises(JsonNestingError, match="^body: "):
        check_depth(value)
    with pytest.raises(json.JSONDecodeError):
        loads("{not json")
