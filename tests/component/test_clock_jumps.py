"""Wall-clock jumps against the real dispatcher and store, on a fake clock: misfire policies
after a forward jump, a jump in the middle of a pulse, and DST changes that are *not* jumps."""

from __future__ import annotations

from pathlib import Path

from schedd.keys import firing_key
from schedd.model import (
    CommandTask,
    CronSpec,
    FiringState,
    IntervalSpec,
    Misfire,
    OnceSpec,
    Overlap,
    Policies,
    ScheduleSpec,
)
from schedd.timer import JUMP_CHECK_MS
from tests.component.test_dispatcher import T0, start, stop
from tests.fakes import FakeClock

HOUR = 3_600_000
EVERY = 10_000


def interval(name: str, misfire: Misfire, max_catchup: int = 100) -> ScheduleSpec:
    # overlap "allow": the default "skip" would cap a replay at one firing in flight.
    policies = Policies(
        misfire=misfire, misfire_grace_ms=1000, max_catchup=max_catchup, overlap=Overlap.ALLOW
    )
    return ScheduleSpec(name, IntervalSpec(EVERY), CommandTask(("true",)), policies, jitter_ms=0)


async def test_after_a_forward_jump_each_misfire_policy_does_what_it_says(tmp_path: Path) -> None:
    h = await start(
        FakeClock(wall_ms=T0 + 1),
        tmp_path / "s.db",
        interval("once", Misfire.FIRE_ONCE),
        interval("all", Misfire.FIRE_ALL, max_catchup=5),
        interval("none", Misfire.SKIP),
    )
    h.clock.jump_wall(100 * EVERY)  # 100 occurrences of each are now in the past
    await h.advance(JUMP_CHECK_MS)
    fired = h.runner.fired_keys()
    assert [k for k in fired if k.startswith("once@")] == [firing_key("once", T0 + 100 * EVERY)]
    assert [k for k in fired if k.startswith("all@")] == [
        firing_key("all", T0 + n * EVERY) for n in range(96, 101)
    ], "fire_all replays the newest max_catchup occurrences"
    assert [k for k in fired if k.startswith("none@")] == []
    # Skipped occurrences are recorded up to max_catchup rows each, the reason counting them all.
    skipped = [FiringState.SKIPPED]
    assert await h.store.count_firings_of("all", skipped) == 5
    assert await h.store.count_firings_of("none", skipped) == 100
    record = await h.store.get_firing(firing_key("none", T0 + 50 * EVERY))
    assert record.state is FiringState.SKIPPED
    assert record.reason == "misfire: 100 occurrence(s) missed their grace"
    assert h.early() == []
    await stop(h)


async def test_a_jump_in_the_middle_of_a_pulse_fires_each_firing_once_and_never_early(
    tmp_path: Path,
) -> None:
    due = T0 + 5_000
    pulse = [
        ScheduleSpec(f"p{i}", OnceSpec(due), CommandTask(("true",)), jitter_ms=0)
        for i in range(300)
    ]
    h = await start(FakeClock(wall_ms=T0 + 1), tmp_path / "s.db", *pulse)
    await h.advance(4_000)
    h.clock.jump_wall(-HOUR)  # back an hour, one second before the pulse
    await h.advance(2_000)
    assert h.runner.fired_keys() == [], "the pulse is an hour away again by the wall clock"
    h.clock.jump_wall(HOUR + 30_000)  # and forward past it
    await h.advance(JUMP_CHECK_MS)
    keys = h.runner.fired_keys()
    assert sorted(keys) == sorted(firing_key(f"p{i}", due) for i in range(300))
    assert h.early() == []
    h.clock.jump_wall(-2 * HOUR)  # a step back must not re-fire any of them
    await h.advance(10 * EVERY)
    assert len(h.runner.fired_keys()) == 300
    assert h.dispatcher._timer.jumps.count == 3
    await stop(h)


async def test_dst_changes_are_not_clock_jumps(tmp_path: Path) -> None:
    """Wall time is UTC: a zone's DST change moves local readings, not the wall-monotonic offset."""
    for start_utc in (
        1_774_746_000_000,  # 2026-03-29T01:00:00Z: Berlin springs forward at 01:00 UTC
        1_792_890_000_000,  # 2026-10-25T01:00:00Z: Berlin falls back at 01:00 UTC
    ):
        spec = ScheduleSpec(
            "hourly", CronSpec("0 * * * *", "Europe/Berlin"), CommandTask(("true",)), jitter_ms=0
        )
        h = await start(
            FakeClock(wall_ms=start_utc - 2 * HOUR + 1), tmp_path / f"{start_utc}.db", spec
        )
        for _ in range(4 * 60):  # four hours across the change, a minute at a time
            await h.advance(60_000)
        fired = [t.scheduled_for_ms for t, _ in h.runner.fired]
        assert fired == [start_utc - HOUR, start_utc, start_utc + HOUR, start_utc + 2 * HOUR]
        assert h.dispatcher._timer.jumps.count == 0
        assert h.early() == []
        await stop(h)
