"""The retention policy: defaults, settings, overrides, cutoffs and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from commandlog.errors import ConfigurationError
from commandlog.retention.policy import RetentionPolicy
from commandlog.settings import Settings

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


def test_defaults_are_30_days_730_days_and_never_for_permanent():
    policy = RetentionPolicy()
    assert (policy.max_days("short_lived"), policy.max_days("long_lived"), policy.max_days("permanent")) == (
        30, 730, "never")
    assert policy.cutoffs("short_lived", AS_OF).default == AS_OF - timedelta(days=30)
    assert policy.cutoffs("permanent", AS_OF).latest is None


def test_settings_set_the_classes_and_the_tenant_overrides():
    policy = RetentionPolicy.from_settings(Settings.from_env({
        "CMDLOG_RETENTION_SHORT_LIVED_DAYS": "7", "CMDLOG_RETENTION_LONG_LIVED_DAYS": "never",
        "CMDLOG_RETENTION_TENANT_OVERRIDES": '{"acme": {"short_lived_days": 90}, "globex": {"long_lived_days": 365}}'}))
    assert policy.max_days("short_lived") == 7 and policy.max_days("long_lived") == "never"
    assert policy.max_days("short_lived", "acme") == 90 and policy.max_days("long_lived", "acme") == "never"
    cut = policy.cutoffs("long_lived", AS_OF)
    assert cut.default is None and cut.overrides == {"globex": AS_OF - timedelta(days=365)}
    assert cut.latest == AS_OF - timedelta(days=365)


@pytest.mark.parametrize(("env", "message"), [
    ({"CMDLOG_RETENTION_SHORT_LIVED_DAYS": "soon"}, "CMDLOG_RETENTION_SHORT_LIVED_DAYS"),
    ({"CMDLOG_RETENTION_LONG_LIVED_DAYS": "0"}, "long_lived_days"),
    ({"CMDLOG_RETENTION_TENANT_OVERRIDES": "{not json"}, "CMDLOG_RETENTION_TENANT_OVERRIDES"),
    ({"CMDLOG_RETENTION_TENANT_OVERRIDES": '{"acme": {"permanent_days": 1}}'}, "permanent_days"),
])
def test_bad_settings_name_the_setting_and_the_problem(env, message):
    with pytest.raises(ConfigurationError, match=message):
        RetentionPolicy.from_settings(Settings.from_env(env))


def test_the_flow_form_rejects_ages_below_one_day_and_unknown_fields():
    with pytest.raises(ValidationError, match="at least 1 day"):
        RetentionPolicy(short_lived_days=0)
    with pytest.raises(ValidationError, match="tenant_overrides.acme.long_lived_days"):
        RetentionPolicy.model_validate({"tenant_overrides": {"acme": {"long_lived_days": -3}}})
    with pytest.raises(ValidationError, match="permanent_days"):
        RetentionPolicy.model_validate({"permanent_days": 10})
    schema = RetentionPolicy.model_json_schema()
    assert set(schema["properties"]) == {"short_lived_days", "long_lived_days", "tenant_overrides", "batch_size",
                                         "lock_timeout_ms", "purge_rest", "reclaim_mb_per_s"}
    with pytest.raises(ValidationError, match="purge_rest"):
        RetentionPolicy.model_validate({"purge_rest": -0.5})
    with pytest.raises(ValidationError, match="reclaim_mb_per_s"):
        RetentionPolicy.model_validate({"reclaim_mb_per_s": -1})
    # fields of earlier versions are ignored (a deployment's stored parameters, a stored run), the rest still checked
    old = RetentionPolicy.model_validate({"short_lived_days": 7, "drop_rest": 1.0, "drop_step_mb": 64})
    assert old.short_lived_days == 7 and "drop_rest" not in old.model_dump()
    with pytest.raises(ValidationError, match="drop_steps"):
        RetentionPolicy.model_validate({"drop_steps": 1})
