"""How a sealing run yields to the writers: its settings (a bad value names the variable), its rests, and the
lowered priority of the thread it runs in (the caller's own is left alone)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from commandlog.errors import ConfigurationError
from commandlog.integrity.pacing import DEFAULT_BUDGET, DEFAULT_NICE, MAX_REST, Pacer, Pacing, in_lowered_thread
from commandlog.settings import Settings


def test_defaults_lower_the_priority_and_never_rest():
    p = Pacing.from_settings(Settings.from_env({}))
    assert (p.nice, p.budget) == (DEFAULT_NICE, DEFAULT_BUDGET) == (10, 1.0)


def test_settings_are_read_from_their_variables():
    p = Pacing.from_settings(Settings.from_env({"CMDLOG_SEAL_NICE": "0", "CMDLOG_SEAL_BUDGET": " 0.25 "}))
    assert (p.nice, p.budget) == (0, 0.25)


@pytest.mark.parametrize(("env", "field", "problem"), [
    ({"CMDLOG_SEAL_NICE": "high"}, "CMDLOG_SEAL_NICE", "not 'high'"),
    ({"CMDLOG_SEAL_NICE": "20"}, "CMDLOG_SEAL_NICE", "not 20"),
    ({"CMDLOG_SEAL_NICE": "-5"}, "CMDLOG_SEAL_NICE", "not -5"),
    ({"CMDLOG_SEAL_BUDGET": "0"}, "CMDLOG_SEAL_BUDGET", "not 0"),
    ({"CMDLOG_SEAL_BUDGET": "1.5"}, "CMDLOG_SEAL_BUDGET", "not 1.5"),
    ({"CMDLOG_SEAL_BUDGET": "nan"}, "CMDLOG_SEAL_BUDGET", "not nan"),
    ({"CMDLOG_SEAL_BUDGET": "half"}, "CMDLOG_SEAL_BUDGET", "not 'half'"),
])
def test_a_bad_value_is_refused_naming_the_variable_and_the_problem(env, field, problem):
    with pytest.raises(ConfigurationError) as e:
        Pacing.from_env(env)
    assert str(e.value).startswith(f"{field}: ") and problem in str(e.value)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_the_pacer_rests_so_the_work_is_its_budget_of_the_time():
    clock = _Clock()
    pacer = Pacer(0.25, sleep=clock.sleep, clock=lambda: clock.now)
    clock.now += 0.3  # 0.3 s of work: at a quarter of the time, 0.9 s of rest
    pacer()
    clock.now += 0.1
    pacer()
    assert clock.slept == pytest.approx([0.9, 0.3]) and pacer.rested == pytest.approx(1.2)
    clock.now += 100  # a very slow chunk: one rest of at most MAX_REST
    pacer()
    assert clock.slept[-1] == MAX_REST


def test_a_full_budget_never_rests():
    clock = _Clock()
    pacer = Pacer(1.0, sleep=clock.sleep, clock=lambda: clock.now)
    clock.now += 5
    pacer()
    assert clock.slept == [] and pacer.rested == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness: Linux")
def test_the_work_runs_in_a_thread_of_lowered_priority_and_the_caller_keeps_its_own():
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    wanted = min(19, mine + 3)
    seen = in_lowered_thread(lambda: (threading.get_native_id(),
                                      os.getpriority(os.PRIO_PROCESS, threading.get_native_id())), nice=wanted)
    assert seen[0] != threading.get_native_id() and seen[1] == wanted
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_the_work_s_error_is_the_caller_s():
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        in_lowered_thread(fail, nice=5)
    assert in_lowered_thread(lambda: 42, nice=0) == 42
