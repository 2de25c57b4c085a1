"""``expect_success_within`` with a fake clock: exact deadlines, episodes, wall-clock steps.

The hook runner is a recorder (the watch only starts hooks; running them is the hook runner's
job). After each ``advance`` the test waits until the watch is asleep again
(``clock.settled()``), so it can assert what did *not* happen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest

from schedd.keys import format_instant
from schedd.overdue import RECHECK_MS, OverdueWatch
from tests.fakes import FakeClock

HOUR = 3_600_000
WINDOW = 26 * HOUR
HOOK = ("/usr/local/bin/page", "oncall")


@dataclass
class Watch:
    clock: FakeClock
    watch: OverdueWatch
    hooks: list[tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=list)

    async def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        await self.clock.settled()

    async def changed(self) -> None:
        """Wait until the loop has reacted to a track/succeeded call made just before."""
        self.clock.unsettle()
        await self.clock.settled()

    def track(self, name: str = "nightly", *, last: int | None = None, added: int = 0) -> None:
        self.watch.track(name, WINDOW, HOOK, last_success_ms=last, added_ms=added)


@pytest.fixture
async def w(clock: FakeClock) -> AsyncIterator[Watch]:
    hooks: list[tuple[tuple[str, ...], dict[str, str]]] = []

    def run_hook(argv: tuple[str, ...], env: Mapping[str, str]) -> None:
        hooks.append((argv, dict(env)))

    watch = OverdueWatch(clock, run_hook)
    clock.unsettle()
    task = asyncio.create_task(watch.run())
    await clock.settled()
    yield Watch(clock, watch, hooks)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_overdue_exactly_when_the_window_has_passed(
    w: Watch, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    t0 = clock.wall_ms()
    w.track(added=t0)
    await w.changed()
    await w.advance(WINDOW - 1)
    assert w.watch.overdue() == {"nightly": False}
    assert w.hooks == []
    await w.advance(1)
    assert w.watch.overdue() == {"nightly": True}
    assert w.hooks == [
        (
            HOOK,
            {
                "SCHEDD_SCHEDULE": "nightly",
                "SCHEDD_OVERDUE_SINCE": format_instant(t0 + WINDOW),
                "SCHEDD_LAST_SUCCESS": "",
            },
        )
    ]
    [record] = [r for r in caplog.records if r.name == "schedd.overdue"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"schedule nightly overdue: no successful run since {format_instant(t0)}"
        " (when it was added) (expected within 1d2h)"
    )


async def test_the_hook_runs_once_per_episode_and_a_success_starts_a_new_window(
    w: Watch, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "schedd.overdue")
    t0 = clock.wall_ms()
    w.track(last=t0, added=t0 - HOUR)
    await w.changed()
    await w.advance(WINDOW)
    await w.advance(5 * HOUR)
    assert len(w.hooks) == 1, "still the same episode"
    caplog.clear()
    success = clock.wall_ms()
    w.watch.succeeded("nightly", success)
    assert w.watch.overdue() == {"nightly": False}
    assert "succeeded again" in caplog.text
    await w.changed()
    await w.advance(WINDOW - 1)
    assert len(w.hooks) == 1
    await w.advance(1)
    assert len(w.hooks) == 2, "a new episode runs the hook again"
    assert w.hooks[1][1]["SCHEDD_LAST_SUCCESS"] == format_instant(success)
    assert w.hooks[1][1]["SCHEDD_OVERDUE_SINCE"] == format_instant(success + WINDOW)


async def test_a_success_before_the_deadline_postpones_it(w: Watch, clock: FakeClock) -> None:
    w.track(added=clock.wall_ms())
    await w.changed()
    await w.advance(WINDOW - HOUR)
    w.watch.succeeded("nightly", clock.wall_ms())
    await w.changed()
    await w.advance(WINDOW - 1)
    assert w.watch.overdue() == {"nightly": False}
    assert w.hooks == []
    await w.advance(1)
    assert w.watch.overdue() == {"nightly": True}


async def test_a_schedule_whose_last_success_is_long_past_is_overdue_at_once(
    w: Watch, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    last = clock.wall_ms() - 10 * WINDOW
    w.track(last=last, added=last - WINDOW)
    await w.changed()
    assert w.watch.overdue() == {"nightly": True}
    assert w.hooks[0][1]["SCHEDD_LAST_SUCCESS"] == format_instant(last)
    assert w.hooks[0][1]["SCHEDD_OVERDUE_SINCE"] == format_instant(last + WINDOW)
    assert f"no successful run since {format_instant(last)} (expected" in caplog.text


async def test_a_re_added_name_gets_a_full_window_from_when_it_was_added(
    w: Watch, clock: FakeClock
) -> None:
    added = clock.wall_ms()
    w.track(last=added - 10 * WINDOW, added=added)
    await w.changed()
    await w.advance(WINDOW - 1)
    assert w.watch.overdue() == {"nightly": False}


async def test_forget_stops_watching(w: Watch, clock: FakeClock) -> None:
    w.track(added=clock.wall_ms())
    await w.changed()
    w.watch.forget("nightly")
    await w.advance(2 * WINDOW)
    assert w.watch.overdue() == {}
    assert w.hooks == []
    w.watch.succeeded("nightly", clock.wall_ms())  # a run finishing after removal is ignored
    assert w.watch.overdue() == {}


async def test_re_tracking_on_reload_keeps_the_episode_and_what_was_seen(
    w: Watch, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "schedd.overdue")
    t0 = clock.wall_ms()
    w.track(added=t0)
    await w.changed()
    await w.advance(WINDOW)
    w.track(added=t0)  # a reload: same expectation
    await w.changed()
    assert (w.watch.overdue(), len(w.hooks)) == ({"nightly": True}, 1)
    w.watch.track("nightly", 2 * WINDOW, HOOK, last_success_ms=None, added_ms=t0)
    assert w.watch.overdue() == {"nightly": False}
    assert "no longer overdue: its window is now 2d4h" in caplog.text
    await w.changed()
    w.watch.succeeded("nightly", clock.wall_ms())
    stale = clock.wall_ms() - WINDOW  # a reload reading the store just before that success
    w.watch.track("nightly", WINDOW, HOOK, last_success_ms=stale, added_ms=t0)
    await w.changed()
    await w.advance(WINDOW - 1)
    assert (w.watch.overdue(), len(w.hooks)) == ({"nightly": False}, 1)


async def test_a_backward_wall_step_never_reports_early(w: Watch, clock: FakeClock) -> None:
    t0 = clock.wall_ms()
    w.track(added=t0)
    await w.changed()
    clock.jump_wall(-HOUR)
    await w.advance(WINDOW)  # the monotonic wait is over, but the wall clock says T0+25h
    assert w.watch.overdue() == {"nightly": False}
    await w.advance(HOUR - 1)
    assert w.watch.overdue() == {"nightly": False}
    await w.advance(1)
    assert w.watch.overdue() == {"nightly": True}


async def test_a_forward_wall_step_is_noticed_within_the_recheck_interval(
    w: Watch, clock: FakeClock
) -> None:
    w.track(added=clock.wall_ms())
    await w.changed()
    clock.jump_wall(WINDOW)
    await w.advance(RECHECK_MS)
    assert w.watch.overdue() == {"nightly": True}


async def test_a_failing_hook_runner_does_not_stop_the_watch(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[str] = []

    def run_hook(argv: tuple[str, ...], env: Mapping[str, str]) -> None:
        started.append(env["SCHEDD_SCHEDULE"])
        raise RuntimeError("no such hook runner")

    watch = OverdueWatch(clock, run_hook)
    t0 = clock.wall_ms()
    watch.track("a", HOUR, HOOK, last_success_ms=None, added_ms=t0)
    watch.track("b", 2 * HOUR, HOOK, last_success_ms=None, added_ms=t0)
    watch.track("quiet", HOUR, None, last_success_ms=None, added_ms=t0)
    clock.unsettle()
    task = asyncio.create_task(watch.run())
    await clock.settled()
    clock.advance(2 * HOUR)
    await clock.settled()
    assert watch.overdue() == {"a": True, "b": True, "quiet": True}
    assert sorted(started) == ["a", "b"], "a schedule without on_overdue starts no hook"
    assert "could not start the on_overdue hook of a" in caplog.text
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
