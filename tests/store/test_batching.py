"""The batched SQLite paths: dispatch, reconcile and transitions in few statements.

The contract tests check one schedule at a time; these check the same guarantees at sizes that
span several statements (``DISPATCH_STEP``, ``ROWS_PER_INSERT``, ``SCHEDULES_PER_INSERT``), and
that the shortcuts (tickets built without reading rows back, ids from ``RETURNING``, a
transition checked by its UPDATE) give exactly what the long way gives.
"""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from schedd.errors import IllegalTransition, NotFound
from schedd.model import CommandTask, FiringState, OnceSpec, ScheduleSpec
from schedd.planner import initial_marks, plan
from schedd.store.records import NewFiring, SchedulePlan, ScheduleRule
from schedd.store.schedules import DISPATCH_STEP, SCHEDULES_PER_INSERT
from schedd.store.sqlite import SqliteStore
from tests.store.helpers import T0, add, committed, fire_at, spec

N = max(DISPATCH_STEP, SCHEDULES_PER_INSERT) + 7


def once(name: str, argv: tuple[str, ...] = ("true",)) -> ScheduleSpec:
    return ScheduleSpec(name=name, trigger=OnceSpec(T0), task=CommandTask(argv))


async def all_ids(store: SqliteStore) -> list[int]:
    rows = await store.due_schedules(after=None, until_ms=2**62, limit=10 * N)
    return [row[1] for row in rows]


def rows(store: SqliteStore, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(store.path)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


async def test_a_pulse_larger_than_a_step_commits_every_firing_once_with_exact_tickets(
    store: SqliteStore,
) -> None:
    specs = [once(f"p{i:05d}") for i in range(N)]
    await store.reconcile(specs, initial=lambda s, hw: initial_marks(s, hw, T0), now_ms=T0)
    ids = await all_ids(store)
    assert len(ids) == N

    def planner(rule: ScheduleRule) -> SchedulePlan | None:
        return plan(rule, now_ms=T0, active=0)

    tickets = await store.dispatch(ids, planner)
    assert len(tickets) == N
    assert len({t.firing_id for t in tickets}) == N
    for t in tickets[:: DISPATCH_STEP // 3]:
        # Built from the plan and the RETURNING id: the same as reading the row back.
        assert t == (await store.get_firing(t.key)).ticket()
    assert await store.dispatch(ids, planner) == [], "nothing is due twice"
    assert await store.count_firings_of("p00000", list(FiringState)) == 1
    marks = rows(
        store, "SELECT DISTINCT fired_through_ms, next_fire_ms, next_due_ms FROM schedules"
    )
    assert marks == [(T0, None, None)]


async def test_keys_that_exist_or_repeat_give_no_ticket_and_the_first_one_is_kept(
    store: SqliteStore,
) -> None:
    first = await committed(store, "a")
    await add(store, spec("b"), spec("c"))
    b, c = [(await store.get_schedule(n)).id for n in ("b", "c")]
    inner = fire_at(T0)

    def planner(rule: ScheduleRule) -> SchedulePlan | None:
        p = inner(rule)
        assert p is not None
        f = p.firings[0]
        if rule.name == "b":  # an occurrence whose key is already stored
            f = dataclasses.replace(f, key=first.key, due_ms=T0 + 99)
        # c repeats its own key: only the first copy is inserted
        extra = dataclasses.replace(f, due_ms=T0 + 1) if rule.name == "c" else None
        return dataclasses.replace(p, firings=(f,) if extra is None else (f, extra))

    tickets = await store.dispatch([b, c], planner)
    assert [(t.key, t.ready_ms) for t in tickets] == [(f"c@{T0}", T0)]
    assert (await store.get_firing(first.key)).due_ms == T0, "the stored firing is untouched"
    assert (await store.get_firing(f"c@{T0}")).due_ms == T0


async def test_a_high_water_mark_moving_back_in_a_later_step_writes_nothing_at_all(
    store: SqliteStore,
) -> None:
    specs = [once(f"p{i:05d}") for i in range(DISPATCH_STEP + 1)]
    await store.reconcile(specs, initial=lambda s, hw: initial_marks(s, hw, T0), now_ms=T0)
    ids = await all_ids(store)
    last = ids[-1]
    await store.dispatch([last], fire_at(T0 + 50))
    with pytest.raises(IllegalTransition, match="high-water"):
        await store.dispatch(ids, fire_at(T0 + 60, hw=T0))
    assert await store.count_firings([FiringState.COMMITTED]) == 1, "the earlier steps rolled back"


async def test_reconcile_of_many_schedules_stores_each_distinct_payload_once(
    store: SqliteStore,
) -> None:
    specs = [once(f"p{i:05d}", argv=("echo", str(i % 3))) for i in range(N)]
    summary = await store.reconcile(specs, initial=lambda s, hw: (T0, T0), now_ms=T0)
    assert summary.added == tuple(s.name for s in specs)
    assert rows(store, "SELECT count(*) FROM payloads") == [(3,)]
    for i in (0, 1, 2, N - 1):
        assert (await store.get_schedule(f"p{i:05d}")).spec == specs[i]
    changed = [*specs[:-1], once(specs[-1].name, argv=("echo", "new"))]
    again = await store.reconcile(changed[1:], initial=lambda s, hw: (T0, T0), now_ms=T0)
    assert (again.added, again.changed, again.removed) == ((), (specs[-1].name,), ("p00000",))
    assert again.unchanged == N - 2
    assert (await store.get_schedule(specs[-1].name)).spec == changed[-1]


async def test_a_refused_transition_says_why_and_changes_nothing(store: SqliteStore) -> None:
    t = await committed(store)
    run_id = await store.start_run(t, None, T0)
    with pytest.raises(IllegalTransition, match="running -> running"):
        await store.start_run(t, None, T0 + 1)
    with pytest.raises(NotFound, match="firing id 999999"):
        await store.set_firing_state(999_999, FiringState.CANCELLED, reason=None, now_ms=T0)
    with pytest.raises(IllegalTransition, match="running -> scheduled"):
        await store.set_firing_state(t.firing_id, FiringState.SCHEDULED, reason=None, now_ms=T0)
    rec = await store.get_firing(t.key)
    assert (rec.state, rec.updated_ms) == (FiringState.RUNNING, T0)
    assert [r.id for r in await store.runs_of(t.firing_id)] == [run_id]


def test_a_new_firings_ticket_is_what_its_stored_row_gives() -> None:
    f = NewFiring("k", 3, "s", T0, T0 + 5, FiringState.COMMITTED, 9, "fast", catchup=True)
    later = dataclasses.replace(f, created_ms=T0 + 60_000)
    assert f.ticket(4).ready_ms == T0 + 5
    assert later.ticket(4).ready_ms == T0 + 60_000, "stored later than due: ready when stored"
    t = f.ticket(4)
    assert (t.firing_id, t.attempt, t.crashes, t.lane, t.catchup) == (4, 1, 0, "fast", True)


async def test_large_payloads_are_stored_over_several_statements_each_under_its_own_id(
    store: SqliteStore,
) -> None:
    argv = [("echo", f"{i:03d}" * 20_000) for i in range(40)]  # 40 distinct 60 KB tasks
    big = [once(f"b{i}", argv=a) for i, a in enumerate(argv)]
    twin = once("twin", argv=argv[0])
    await store.reconcile([*big, twin], initial=lambda s, hw: (T0, T0), now_ms=T0)
    assert rows(store, "SELECT count(*), sum(size) > 40 * 60000 FROM payloads") == [(40, 1)]
    for s in [*big[::13], twin]:
        assert (await store.get_schedule(s.name)).spec == s
    assert (await store.get_schedule("twin")).payload_id == (
        await store.get_schedule("b0")
    ).payload_id
