"""Pure parts of the monitor: NOTIFY payload packing, the tenant fence and filters, the rate limiter, and the
validation of frontend actions."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commandlog.auth.tokens import Principal
from commandlog.monitor.filters import ActivityFilterError, parse_filter
from commandlog.monitor.frontend_actions import (
    ActionTooLargeError,
    FrontendActionError,
    parse_request,
    validate,
)
from commandlog.monitor.publisher import MAX_PAYLOAD_BYTES, command_item, pack, stamp
from commandlog.monitor.ratelimit import RateLimitedError, RateLimiter

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
VIEWER = Principal(token_id="0123456789ab", tenant_id="acme", role="viewer")


def _lean(**over):
    lean = {"cmd_uuid": str(uuid.uuid4()), "cmd_class": "billing.X", "tenant_id": "acme", "actor_id": "a",
            "correlation_id": str(uuid.uuid4()), "started_at": NOW.isoformat(), "finished_at": NOW.isoformat(),
            "subjects": ["customer:1"], "error_type": None, "error_message": None}
    return {**lean, **over}


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=3000)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(texts, st.lists(texts, max_size=40)), min_size=1, max_size=30))
def test_packed_payloads_fit_notify_and_keep_every_item_in_order(specs):
    items = [command_item(_lean(error_message=err, subjects=subjects), "failed") for err, subjects in specs]
    payloads = pack(items)
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in payloads)
    unpacked = [i for p in payloads for i in json.loads(p)]
    assert [i["id"] for i in unpacked] == [i["id"] for i in items]


def test_stamps_sort_as_text_in_time_order():
    a, b = NOW, NOW + dt.timedelta(microseconds=1)
    assert stamp(a) < stamp(b) and stamp(a).endswith("Z") and len(stamp(a)) == len(stamp(NOW.replace(microsecond=5)))


def test_the_tenant_fence_comes_before_every_other_filter():
    item = command_item(_lean(tenant_id="beta", actor_id="ann"), "succeeded")
    assert not parse_filter(tenant_id="acme").accepts(item)
    assert not parse_filter(tenant_id="acme", actor="ann", kinds="command").accepts(item)
    assert parse_filter(tenant_id=None).accepts(item)  # admin
    everything = parse_filter(tenant_id="beta", classes="billing.X,billing.Y", subjects="customer:1", actor="ann")
    assert everything.accepts(item)
    assert not parse_filter(tenant_id="beta", subjects="invoice:1").accepts(item)
    assert not parse_filter(tenant_id="beta", kinds="event,frontend_action").accepts(item)


@pytest.mark.parametrize("kw, field_name", [({"kinds": "command,nope"}, "kinds"), ({"actor": " "}, "actor"),
                                             ({"classes": ",".join(["c"] * 51)}, "classes")])
def test_bad_filters_name_their_parameter(kw, field_name):
    with pytest.raises(ActivityFilterError) as e:
        parse_filter(tenant_id="acme", **kw)
    assert e.value.field == field_name


def test_rate_limiter_allows_a_burst_then_refuses_per_key():
    limiter = RateLimiter(rate=0.001, burst=2)
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(RateLimitedError) as e:
        limiter.check("a")
    assert e.value.retry_after > 0
    limiter.check("b")


def test_frontend_action_validation_names_fields_and_sizes():
    actions, batch = parse_request(json.dumps({"action": "a.b", "payload": {"k": 1}}).encode())
    assert not batch and validate(actions, VIEWER, batch=batch, now=NOW)[0].tenant_id == "acme"
    body = [{"action": "ok"}, {"action": "x", "payload": {"b": "z" * 17000}}]
    actions, batch = parse_request(json.dumps(body).encode())
    with pytest.raises(ActionTooLargeError) as e:
        validate(actions, VIEWER, batch=batch, now=NOW)
    assert e.value.errors[0]["field"] == "actions.1.payload"
    with pytest.raises(FrontendActionError) as e:
        validate([{"action": "a", "occurred_at": "2026-11-20T00:00:00Z"}], VIEWER, batch=False, now=NOW)
    assert e.value.errors[0]["field"] == "occurred_at"
    admin = Principal(token_id="0123456789ab", tenant_id=None, role="admin")
    with pytest.raises(FrontendActionError) as e:
        validate([{"action": "a"}], admin, batch=False, now=NOW)
    assert e.value.errors[0]["field"] == "tenant_id"
    assert validate([{"action": "a", "tenant_id": "beta"}], admin, batch=False, now=NOW)[0].tenant_id == "beta"
