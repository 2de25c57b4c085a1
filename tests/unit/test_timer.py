"""The wheel's driver with a fake clock: expired keys in bounded steps, ``first`` keys ahead.

The wheel's own order is tested in ``test_wheel.py``; these pin what the timer adds on top: the
limit per call, the ``first`` keys handed out alone before any other, and both kept across a
clock jump's re-mapping.
"""

from __future__ import annotations

import asyncio

from schedd.timer import Timer
from tests.fakes import FakeClock

W = 1_767_225_600_000


def timer_at(wall_ms: int = W) -> tuple[FakeClock, Timer]:
    clock = FakeClock(wall_ms=wall_ms)
    return clock, Timer(clock)


def test_expired_keys_come_out_at_most_limit_at_a_time_and_never_early() -> None:
    clock, timer = timer_at()
    for i in range(7):
        timer.arm(("s", i), W + 100)
    timer.arm(("s", 99), W + 101)
    clock.advance(99)
    assert timer.expired_now(3) == []
    clock.advance(1)
    steps = [timer.expired_now(3) for _ in range(4)]
    assert steps == [[("s", 0), ("s", 1), ("s", 2)], [("s", 3), ("s", 4), ("s", 5)], [("s", 6)], []]
    assert len(timer) == 1, "the one due a millisecond later waits"


def test_first_keys_come_out_alone_ahead_of_the_rest_of_a_pulse() -> None:
    clock, timer = timer_at()
    for i in range(5):
        timer.arm(("s", i), W + 10)
    timer.arm(("s", 50), W + 10, first=True)
    timer.arm(("s", 51), W + 30, first=True)
    clock.advance(10)
    assert timer.expired_now(3) == [("s", 50)], "alone, though the pulse was armed before it"
    assert timer.expired_now(3) == [("s", 0), ("s", 1), ("s", 2)]
    clock.advance(20)
    assert timer.expired_now(3) == [("s", 51)], "due during the pulse: ahead of its rest"
    assert timer.expired_now(3) == [("s", 3), ("s", 4)]


def test_an_expired_key_not_handed_out_yet_can_be_cancelled() -> None:
    clock, timer = timer_at()
    for i in range(5):
        timer.arm(("s", i), W + 10)
    clock.advance(10)
    assert timer.expired_now(2) == [("s", 0), ("s", 1)]
    assert ("s", 3) in timer
    assert timer.cancel(("s", 3)) is True
    assert timer.cancel(("s", 0)) is False, "already handed out"
    assert timer.expired_now(10) == [("s", 2), ("s", 4)]
    assert len(timer) == 0


def test_arming_a_key_again_moves_it_between_first_and_the_rest() -> None:
    clock, timer = timer_at()
    timer.arm("k", W + 10, first=True)
    timer.arm("k", W + 10)
    timer.arm("f", W + 10, first=True)
    assert len(timer) == 2
    clock.advance(10)
    assert timer.expired_now(5) == ["f"]
    assert timer.expired_now(5) == ["k"]
    assert timer.cancel("k") is False


def test_a_clock_jump_re_maps_first_keys_and_the_rest_alike() -> None:
    clock, timer = timer_at()
    timer.arm("rest", W + 20_000)
    timer.arm("first", W + 20_000, first=True)
    clock.jump_wall(15_000)  # the wall-clock due time is now 5 s away
    assert timer.expired_now(5) == []
    assert timer.jumps.count == 1
    clock.advance(4_999)
    assert timer.expired_now(5) == []
    clock.advance(1)
    assert timer.expired_now(5) == ["first"]
    assert timer.expired_now(5) == ["rest"]


async def test_expired_sleeps_until_the_earliest_of_first_and_the_rest() -> None:
    clock, timer = timer_at()
    timer.arm("rest", W + 100)
    timer.arm("first", W + 50, first=True)
    clock.unsettle()
    waiting = asyncio.create_task(timer.expired(5))
    await clock.settled()
    assert clock.next_deadline() == clock.monotonic_ms() + 50
    clock.advance(49)
    await clock.settled()
    assert not waiting.done()
    clock.advance(1)
    assert await waiting == ["first"]
