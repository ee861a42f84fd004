"""Command classes: registration, metadata, upcasting, settings."""

from __future__ import annotations

from typing import Annotated

import pytest

from commandlog import Command, ExcludeCmdBody, NeverStoreCmdBody, Sensitive, UnknownCommandError, registry
from commandlog.commands import CommandRegistry
from commandlog.errors import ConfigurationError
from commandlog.ids import uuid7, uuid7_time
from commandlog.settings import Settings


class _Probe(Command):
    cmd_class = "test_unit.Probe"
    cmd_version = 3
    retention = "permanent"
    cmd_options = (ExcludeCmdBody,)
    secret: Annotated[str, Sensitive]


def test_command_class_registers_itself_under_its_name():
    assert registry.get("test_unit.Probe") is _Probe
    assert _Probe.cmd_version == 3 and _Probe.retention == "permanent"
    assert _Probe.body_excluded() and _Probe.body_stored()


def test_unknown_command_class_names_the_class():
    with pytest.raises(UnknownCommandError, match="test_unit.Nope"):
        registry.get("test_unit.Nope")


def test_never_store_excludes_the_body_everywhere():
    class Secretive(Command):
        cmd_class = "test_unit.Secretive"
        cmd_options = (NeverStoreCmdBody,)

    assert Secretive.body_excluded() and not Secretive.body_stored()


def test_an_invalid_retention_class_is_refused_at_definition():
    with pytest.raises(TypeError, match="retention"):
        class Bad(Command):  # noqa: F841
            cmd_class = "test_unit.Bad"
            retention = "forever"


def test_two_classes_cannot_share_a_name():
    reg = CommandRegistry()

    class A(Command):
        cmd_class = ""

    class B(Command):
        cmd_class = ""

    A.cmd_class = B.cmd_class = "x.Same"
    reg.register(A)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(B)


def test_upcasters_bring_an_old_body_to_the_current_version():
    reg = CommandRegistry()

    class V3(Command):
        cmd_class = ""
        full_name: str

    V3.cmd_class, V3.cmd_version = "x.V3", 3
    reg.register(V3)
    reg.upcaster("x.V3", 1)(lambda b: {"name": b["nm"]})
    reg.upcaster("x.V3", 2)(lambda b: {"full_name": b["name"]})
    assert reg.upcast("x.V3", 1, {"nm": "Ada"}) == {"full_name": "Ada"}
    with pytest.raises(ValueError, match="no upcaster"):
        reg.upcast("x.V3", 0, {})


def test_uuid7_is_time_ordered_and_carries_its_time():
    ids = [uuid7() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(u.version == 7 for u in ids)
    assert abs((uuid7_time(ids[0]) - uuid7_time(ids[-1])).total_seconds()) < 5


def test_settings_reject_a_bad_body_limit_by_name():
    with pytest.raises(ConfigurationError, match="CMDLOG_MAX_BODY_BYTES"):
        Settings.from_env({"CMDLOG_MAX_BODY_BYTES": "lots"})
    s = Settings.from_env({"CMDLOG_HOME": "/tmp/x", "CMDLOG_APPS": "a, b"})
    assert s.apps == ("a", "b") and s.lake == "/tmp/x/lake" and s.database_url is None
