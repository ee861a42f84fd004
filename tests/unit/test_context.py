"""ExecutionContext.with_ (the bus calls it on every command to fill in the correlation id) and uuid7 ordering."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from commandlog.context import ExecutionContext
from commandlog.ids import uuid7


def test_with_returns_an_equal_frozen_copy_with_the_changes_and_leaves_the_original_alone():
    original = ExecutionContext(tenant_id="t", actor_id="a", causation_id=uuid.uuid4())
    corr = uuid.uuid4()
    copy = original.with_(correlation_id=corr)
    assert copy == dataclasses.replace(original, correlation_id=corr)
    assert hash(copy) == hash(dataclasses.replace(original, correlation_id=corr))
    assert type(copy) is ExecutionContext and copy is not original and original.correlation_id is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.tenant_id = "other"  # type: ignore[misc]


def test_with_refuses_an_unknown_field_by_name():
    with pytest.raises(TypeError, match="bogus"):
        ExecutionContext(tenant_id="t", actor_id="a").with_(bogus=1)


def test_uuid7_is_strictly_increasing_within_the_process_and_well_formed():
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {u.version for u in ids} == {7} and {u.variant for u in ids} == {uuid.RFC_4122}
