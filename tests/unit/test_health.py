"""Health (the watchdog's and heartbeat's judgement), failpoint specs and WATCHDOG_USEC parsing."""

from __future__ import annotations

import os

import pytest

from schedd import failpoints
from schedd.errors import InvalidArgument
from schedd.health import STALL_MS, Health, stall_ms_for
from schedd.sdnotify import Notifier
from schedd.timer import JUMP_CHECK_MS, Timer
from tests.fakes import FakeClock


class Failing:
    failing: str | None = None


def test_a_loop_that_stops_waking_is_unhealthy_after_the_stall_bound() -> None:
    clock = FakeClock()
    dispatcher = Failing()
    health = Health(Timer(clock), dispatcher, clock, stall_ms=5000)
    assert health.problem() is None
    clock.advance(5000)
    assert health.problem() is None
    clock.advance(1)
    assert health.problem() == "the dispatch loop has not advanced for 5001 ms"


def test_failing_commits_are_unhealthy_even_while_the_loop_wakes() -> None:
    clock = FakeClock()
    dispatcher = Failing()
    health = Health(Timer(clock), dispatcher, clock)
    dispatcher.failing = "database or disk is full"
    assert health.problem() == "write-ahead commits are failing: database or disk is full"


def test_the_stall_bound_follows_the_watchdog_but_never_undercuts_the_timer() -> None:
    assert stall_ms_for(None) == STALL_MS
    assert stall_ms_for(30_000) == STALL_MS
    assert stall_ms_for(8_000) == 4_000
    assert stall_ms_for(1_000) == 2 * JUMP_CHECK_MS


def test_watchdog_usec_applies_only_to_the_process_it_names() -> None:
    me = str(os.getpid())
    assert Notifier("", {"WATCHDOG_USEC": "30000000"}).watchdog_ms == 30_000
    assert Notifier("", {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}).watchdog_ms == 30_000
    assert Notifier("", {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_ms is None
    assert Notifier("", {"WATCHDOG_USEC": "0"}).watchdog_ms is None
    assert Notifier("", {}).watchdog_ms is None


def test_failpoint_specs_are_checked() -> None:
    armed = failpoints.parse("timer_wake=hang:4, after_commit=kill")
    assert {k: (v.action, v.on_hit) for k, v in armed.items()} == {
        "timer_wake": ("hang", 4),
        "after_commit": ("kill", 1),
    }
    for bad in ("x", "x=explode", "x=hang:0", "x=kill:n", "=hang"):
        with pytest.raises(InvalidArgument, match="SCHEDD_FAILPOINTS"):
            failpoints.parse(bad)
