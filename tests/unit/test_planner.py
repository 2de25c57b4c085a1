"""The planner's misfire and overlap decisions, as a table over a pure function."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    schedule_rule_to_json,
)
from schedd.planner import _plan_scanned, compiled, initial_marks, plan
from schedd.store.records import ScheduleRule

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of every interval used here
MIN = 60_000


def rule(
    *,
    trigger: CronSpec | IntervalSpec | OnceSpec | None = None,
    every_ms: int = MIN,
    next_fire: int = T0,
    jitter: int = 0,
    misfire: Misfire = Misfire.FIRE_ONCE,
    grace_ms: int = 30_000,
    max_catchup: int = 100,
    overlap: Overlap = Overlap.SKIP,
    paused: bool = False,
) -> ScheduleRule:
    spec = ScheduleSpec(
        name="job",
        trigger=trigger or IntervalSpec(every_ms),
        task=CommandTask(("true",)),
        policies=Policies(
            misfire=misfire, misfire_grace_ms=grace_ms, max_catchup=max_catchup, overlap=overlap
        ),
    )
    return ScheduleRule(
        id=1,
        name="job",
        rule=json.loads(json.dumps(schedule_rule_to_json(spec))),
        paused=paused,
        fired_through_ms=None,
        next_fire_ms=next_fire,
        next_due_ms=next_fire + jitter,
        payload_id=7,
    )


def fired(p: object) -> list[int]:
    return [f.scheduled_for_ms for f in p.firings if f.state is FiringState.COMMITTED]  # type: ignore[attr-defined]


def skipped(p: object) -> list[int]:
    return [f.scheduled_for_ms for f in p.firings if f.state is FiringState.SKIPPED]  # type: ignore[attr-defined]


def test_not_due_yet_by_the_wall_clock_is_left_alone() -> None:
    assert plan(rule(jitter=500), now_ms=T0 + 499, active=0) is None


def test_due_fires_once_and_moves_the_high_water_mark() -> None:
    p = plan(rule(jitter=500), now_ms=T0 + 500, active=0)
    assert p is not None
    assert fired(p) == [T0]
    assert p.firings[0].key == "job@2026-01-01T00:00:00.000Z"
    assert p.firings[0].due_ms == T0 + 500
    assert (p.fired_through_ms, p.next_fire_ms, p.next_due_ms) == (T0, T0 + MIN, T0 + MIN + 500)


def test_paused_or_exhausted_schedules_do_not_fire() -> None:
    assert plan(rule(paused=True), now_ms=T0, active=0) is None
    r = rule()
    done = ScheduleRule(r.id, r.name, r.rule, False, T0, None, None, r.payload_id)
    assert plan(done, now_ms=T0 + MIN, active=0) is None


@pytest.mark.parametrize(
    ("policy", "cap", "want_fired", "want_skipped"),
    [
        # 10 occurrences T0..T0+9m are due at T0+9m+1s; T0..T0+8m are missed (grace 30 s).
        (Misfire.FIRE_ONCE, 100, [T0 + 8 * MIN, T0 + 9 * MIN], []),
        (Misfire.FIRE_ALL, 100, [T0 + i * MIN for i in range(10)], []),
        (
            Misfire.FIRE_ALL,
            3,
            [T0 + i * MIN for i in (6, 7, 8, 9)],
            [T0 + i * MIN for i in (3, 4, 5)],
        ),
        (Misfire.SKIP, 100, [T0 + 9 * MIN], [T0 + i * MIN for i in range(9)]),
        (Misfire.SKIP, 2, [T0 + 9 * MIN], [T0 + 7 * MIN, T0 + 8 * MIN]),
    ],
)
def test_misfire_policies_after_downtime(
    policy: Misfire, cap: int, want_fired: list[int], want_skipped: list[int]
) -> None:
    p = plan(
        rule(misfire=policy, max_catchup=cap, overlap=Overlap.ALLOW),
        now_ms=T0 + 9 * MIN + 1000,
        active=0,
    )
    assert p is not None
    assert fired(p) == want_fired
    assert skipped(p) == want_skipped
    assert p.fired_through_ms == T0 + 9 * MIN
    assert p.next_fire_ms == T0 + 10 * MIN


def test_a_long_outage_of_a_fast_schedule_is_planned_without_scanning_it_all() -> None:
    week = 7 * 24 * 3600 * 1000
    p = plan(rule(every_ms=1000, overlap=Overlap.ALLOW), now_ms=T0 + week, active=0)
    assert p is not None
    # The missed week collapses into one firing; the 31 occurrences within the 30 s grace fire.
    assert fired(p) == [T0 + week - 31_000] + [T0 + week - i * 1000 for i in range(30, -1, -1)]
    assert (p.firings[0].reason or "").startswith("misfire: about 604")
    flags = {f.scheduled_for_ms: f.catchup for f in p.firings}
    assert flags.pop(T0 + week - 31_000), "the collapsed missed firing is catch-up backlog"
    assert not any(flags.values()), "occurrences within their grace are fresh work"


def test_overlap_skip_records_the_occurrence_as_skipped_while_a_run_is_active() -> None:
    p = plan(rule(), now_ms=T0, active=1)
    assert p is not None
    assert fired(p) == []
    assert skipped(p) == [T0]
    assert "overlap" in (p.firings[0].reason or "")
    assert p.fired_through_ms == T0, "a skipped occurrence still moves the high-water mark"


def test_initial_marks_start_from_now_and_respect_the_high_water_mark() -> None:
    every = ScheduleSpec("job", IntervalSpec(MIN), CommandTask(("true",)), jitter_ms=0)
    assert initial_marks(every, None, T0 + 1) == (T0 + MIN, T0 + MIN)
    assert initial_marks(every, None, T0) == (T0, T0), "an occurrence exactly at now counts"
    assert initial_marks(every, T0 + 5 * MIN, T0) == (T0 + 6 * MIN, T0 + 6 * MIN)
    once = ScheduleSpec("once", OnceSpec(T0 - MIN), CommandTask(("true",)))
    assert initial_marks(once, None, T0) == (T0 - MIN, T0 - MIN), "a past one-shot still fires"
    assert initial_marks(once, T0 - MIN, T0) == (None, None), "but never twice"


def test_initial_marks_add_the_stable_jitter_within_its_bound() -> None:
    cron = ScheduleSpec("job", CronSpec("0 * * * *", "UTC"), CommandTask(("true",)))
    nxt, due = initial_marks(cron, None, T0 + 1)
    assert nxt == T0 + 3600_000
    assert nxt is not None
    assert due is not None
    assert 0 <= due - nxt < 60_000
    assert initial_marks(cron, None, T0 + 1) == (nxt, due), "stable across calls"


def with_text(r: ScheduleRule) -> ScheduleRule:
    """``r`` as the store hands it over: with the JSON text its rule was decoded from."""
    return dataclasses.replace(r, rule_json=json.dumps(r.rule, sort_keys=True))


def test_a_rule_compiled_from_its_cached_text_plans_exactly_as_from_the_dict() -> None:
    for r in (rule(), rule(misfire=Misfire.SKIP, max_catchup=2), rule(overlap=Overlap.ALLOW)):
        for now, active in ((T0, 0), (T0, 1), (T0 + 9 * MIN + 1000, 0)):
            want = plan(r, now_ms=now, active=active)
            assert plan(with_text(r), now_ms=now, active=active) == want
            assert plan(with_text(r), now_ms=now, active=active) == want, "again, from the cache"


def test_a_changed_rule_is_a_new_text_and_never_served_the_old_compiled_one() -> None:
    skip, allow = with_text(rule()), with_text(rule(overlap=Overlap.ALLOW))
    assert skip.rule_json != allow.rule_json
    for _ in range(2):
        assert fired(plan(skip, now_ms=T0, active=1)) == []
        assert fired(plan(allow, now_ms=T0, active=1)) == [T0]


triggers = st.one_of(
    st.integers(min_value=1_000, max_value=10 * MIN).map(IntervalSpec),
    st.just(OnceSpec(T0)),
    st.sampled_from(["* * * * *", "*/5 * * * *", "0 * * * *"]).map(CronSpec),
)


@settings(deadline=None)  # a late fast schedule's scan is long by design
@given(
    trigger=triggers,
    jitter=st.integers(min_value=0, max_value=MIN),
    misfire=st.sampled_from(Misfire),
    grace_ms=st.integers(min_value=0, max_value=5 * MIN),
    max_catchup=st.integers(min_value=0, max_value=5),
    overlap=st.sampled_from(Overlap),
    late_ms=st.integers(min_value=0, max_value=30 * MIN),
    active=st.integers(min_value=0, max_value=3),
)
def test_the_plain_case_is_planned_as_the_full_scan_plans_it(
    trigger: CronSpec | IntervalSpec | OnceSpec,
    jitter: int,
    misfire: Misfire,
    grace_ms: int,
    max_catchup: int,
    overlap: Overlap,
    late_ms: int,
    active: int,
) -> None:
    """``plan`` takes a shortcut for one on-time occurrence with room to run; whatever it
    answers, the scan of every due occurrence answers the same."""
    r = rule(
        trigger=trigger,
        jitter=jitter,
        misfire=misfire,
        grace_ms=grace_ms,
        max_catchup=max_catchup,
        overlap=overlap,
    )
    now = T0 + jitter + late_ms
    planned = plan(r, now_ms=now, active=active)
    assert planned is not None
    assert r.next_fire_ms is not None
    scanned = _plan_scanned(r, compiled(r), r.next_fire_ms, jitter, now_ms=now, active=active)
    assert planned == scanned
