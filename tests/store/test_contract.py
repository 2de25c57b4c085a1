"""The store contract (schedd/store/contract.py), checked point by point.

Written against the contract only, so any implementation the ``store`` fixture yields must pass.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import aiosqlite
import pytest

from schedd.errors import IllegalTransition, NotFound, Unavailable
from schedd.model import (
    CommandTask,
    FiringState,
    IntervalSpec,
    OnceSpec,
    PythonTask,
    ScheduleSpec,
)
from schedd.store.records import (
    NewFiring,
    ProcessRef,
    RunFinish,
    Ticket,
)
from schedd.store.schema import MIGRATIONS, SCHEMA_VERSION
from schedd.store.sqlite import SqliteStore
from tests.store.helpers import T0, add, at_now, committed, fire_at, ids, run_once, spec


async def test_reconcile_adds_changes_and_removes_keeping_history(store: SqliteStore) -> None:
    s1 = await store.reconcile([spec("a"), spec("b")], initial=at_now, now_ms=T0)
    assert (sorted(s1.added), s1.changed, s1.removed) == (["a", "b"], (), ())
    [tick] = await store.dispatch([(await store.get_schedule("a")).id], fire_at(T0))
    s2 = await store.reconcile([spec("a", argv=("false",))], initial=at_now, now_ms=T0)
    assert (s2.added, s2.changed, s2.removed, s2.unchanged) == ((), ("a",), ("b",), 0)
    a = await store.get_schedule("a")
    assert a.spec.task == CommandTask(("false",))
    assert a.fired_through_ms == T0, "a changed schedule keeps its high-water mark"
    with pytest.raises(NotFound, match="'b'"):
        await store.get_schedule("b")
    assert (await store.get_firing(tick.key)).state is FiringState.COMMITTED
    s3 = await store.reconcile([spec("a", argv=("false",))], initial=at_now, now_ms=T0)
    assert s3.unchanged == 1
    assert not s3.changed


async def test_dispatch_commits_firings_and_marks_atomically(store: SqliteStore) -> None:
    await add(store, spec("a"))
    [sid] = await ids(store)
    tickets = await store.dispatch([sid], fire_at(T0))
    assert [t.key for t in tickets] == [f"a@{T0}"]
    assert tickets[0].attempt == 1
    rec = await store.get_schedule("a")
    assert (rec.fired_through_ms, rec.next_fire_ms) == (T0, T0 + 10_000)


async def test_a_key_exists_at_most_once(store: SqliteStore) -> None:
    await add(store, spec("a"))
    [sid] = await ids(store)
    await store.dispatch([sid], fire_at(T0))
    again = await store.dispatch([sid], fire_at(T0, hw=T0))
    assert again == [], "an existing key is kept, not duplicated"
    assert await store.count_firings_of("a", list(FiringState)) == 1


async def test_high_water_mark_never_moves_back_and_nothing_is_written(store: SqliteStore) -> None:
    await add(store, spec("a"))
    [sid] = await ids(store)
    await store.dispatch([sid], fire_at(T0 + 20_000))
    with pytest.raises(IllegalTransition, match="high-water"):
        await store.dispatch([sid], fire_at(T0 + 30_000, hw=T0))
    assert await store.count_firings_of("a", list(FiringState)) == 1
    assert (await store.get_schedule("a")).fired_through_ms == T0 + 20_000


def new_firing(
    key: str,
    payload_id: int,
    *,
    due: int = T0,
    state: FiringState = FiringState.COMMITTED,
    schedule: str = "a",
) -> NewFiring:
    return NewFiring(key, None, schedule, due, due, state, payload_id, "default")


async def test_insert_firings_keeps_existing_keys_and_answers_in_input_order(
    store: SqliteStore,
) -> None:
    t = await committed(store)
    batch = [
        new_firing("a@new", t.payload_id, due=T0 + 1),
        new_firing(t.key, t.payload_id, due=T0 + 99, state=FiringState.SKIPPED),
        new_firing("a@later", t.payload_id, due=T0 + 5_000, state=FiringState.SCHEDULED),
        new_firing("a@new", t.payload_id, due=T0 + 2),
    ]
    result = await store.insert_firings(batch)
    assert [(rec.key, created) for rec, created in result] == [
        ("a@new", True),
        (t.key, False),
        ("a@later", True),
        ("a@new", False),
    ]
    old = result[1][0]
    assert (old.id, old.state, old.due_ms) == (t.firing_id, FiringState.COMMITTED, T0), "unchanged"
    assert result[0][0] == result[3][0] == await store.get_firing("a@new")
    assert result[0][0].due_ms == T0 + 1, "the first of a repeated key wins"
    later = await store.get_firing("a@later")
    assert (later.state, later.attempt, later.retry_at_ms) == (FiringState.SCHEDULED, 1, T0 + 5_000)
    assert await store.count_firings_of("a", list(FiringState)) == 3


async def test_insert_firings_takes_a_backfill_larger_than_one_statement(
    store: SqliteStore,
) -> None:
    t = await committed(store)
    batch = [new_firing(f"a@{i}", t.payload_id, due=T0 + i) for i in range(1, 1_202)]
    first = await store.insert_firings(batch)
    assert [rec.key for rec, _ in first] == [f.key for f in batch]
    assert all(created for _, created in first)
    again = await store.insert_firings([new_firing(t.key, t.payload_id), *batch])
    assert not any(created for _, created in again)
    assert [rec.id for rec, _ in again[1:]] == [rec.id for rec, _ in first]
    assert await store.existing_keys(["nope", *(f.key for f in batch)]) == {f.key for f in batch}


async def test_insert_firings_records_when_a_later_firing_was_created(store: SqliteStore) -> None:
    t = await committed(store)
    f = dataclasses.replace(
        new_firing("a@later", t.payload_id, due=T0 + 60_000, state=FiringState.SCHEDULED),
        created_ms=T0 + 7,
    )
    [(rec, _)] = await store.insert_firings([f])
    assert (rec.created_ms, rec.updated_ms, rec.due_ms) == (T0 + 7, T0 + 7, T0 + 60_000)


async def test_run_lifecycle_and_illegal_transitions(store: SqliteStore) -> None:
    await add(store, spec("a"))
    [sid] = await ids(store)
    [t] = await store.dispatch([sid], fire_at(T0))
    run_id = await store.start_run(t, ProcessRef(123, 123, 456), T0 + 5)
    assert (await store.get_firing(t.key)).state is FiringState.RUNNING
    finish = RunFinish(
        t.firing_id,
        "succeeded",
        FiringState.SUCCEEDED,
        T0 + 50,
        0,
        None,
        None,
        b"hello\n",
        6,
        False,
    )
    await store.finish_run(run_id, finish)
    run = await store.get_run(run_id)
    assert (run.state, run.exit_code, run.output, run.process) == (
        "succeeded",
        0,
        b"hello\n",
        ProcessRef(123, 123, 456),
    )
    assert (await store.get_firing(t.key)).state is FiringState.SUCCEEDED
    with pytest.raises(IllegalTransition):
        await store.finish_run(run_id, finish)
    with pytest.raises(IllegalTransition, match="succeeded -> running"):
        await store.start_run(t, None, T0 + 60)
    assert (await store.get_firing(t.key)).state is FiringState.SUCCEEDED


async def test_a_run_ended_before_its_start_is_written_is_stored_whole_as_if_in_two_writes(
    store: SqliteStore,
) -> None:
    await add(store, spec("a"), spec("b"))
    a, b = await ids(store)
    [ta] = await store.dispatch([a], fire_at(T0))
    [tb] = await store.dispatch([b], fire_at(T0))

    def crashed(t: Ticket) -> RunFinish:
        return RunFinish(
            t.firing_id,
            "crash",
            FiringState.FAILED,
            T0 + 50,
            None,
            9,
            "killed by SIGKILL",
            b"out",
            3,
            True,
            crashed=True,
            retry_at_ms=T0 + 1_000,
            firing_reason="crashed",
        )

    apart = await store.start_run(ta, ProcessRef(1, 1, 7), T0 + 5)
    await store.finish_run(apart, crashed(ta))
    whole = await store.start_run(tb, ProcessRef(1, 1, 7), T0 + 5, lambda: crashed(tb))
    runs = [await store.get_run(run_id) for run_id in (apart, whole)]
    assert runs[1].state == "crash"
    mine = dict.fromkeys(("id", "firing_id", "key", "schedule"))  # each run's own
    assert dataclasses.replace(runs[0], **mine) == dataclasses.replace(runs[1], **mine)
    firings = [await store.get_firing(t.key) for t in (ta, tb)]
    assert [(f.state, f.crashes, f.retry_at_ms, f.reason) for f in firings] == [
        (FiringState.FAILED, 1, T0 + 1_000, "crashed")
    ] * 2
    # Written whole, the firing still goes through ``running``: only from a state that may.
    with pytest.raises(IllegalTransition, match="failed -> running"):
        await store.start_run(tb, None, T0 + 60, lambda: crashed(tb))
    assert (await store.get_firing(tb.key)).crashes == 1, "the refused write changed nothing"


async def test_recover_closes_lost_runs_and_requeues_with_next_attempt(store: SqliteStore) -> None:
    await add(store, spec("a"), spec("b"))
    a, b = await ids(store)
    [ta] = await store.dispatch([a], fire_at(T0))
    [tb] = await store.dispatch([b], fire_at(T0))
    run_id = await store.start_run(ta, ProcessRef(10, 10, 99), T0)
    lost = await store.recover(T0 + 1000)
    assert [(r.run_id, r.key, r.process) for r in lost] == [
        (run_id, ta.key, ProcessRef(10, 10, 99))
    ]
    assert (await store.get_run(run_id)).state == "lost"
    queue = await store.ready_page(
        lane="default", catchup=False, first_id=0, last_id=2**62, limit=10
    )
    assert [(f.key, f.state, f.attempt) for f in queue] == [
        (ta.key, FiringState.COMMITTED, 2),
        (tb.key, FiringState.COMMITTED, 2),
    ]


async def test_committed_firings_are_read_back_by_lane_kind_and_id_range(
    store: SqliteStore,
) -> None:
    await add(store, spec("a"), spec("b"))
    a, b = await ids(store)
    sched = await store.get_schedule("a")

    def firing(i: int, lane: str, catchup: bool) -> NewFiring:
        return NewFiring(
            f"a@{i}",
            a,
            "a",
            T0 + i,
            T0 + i,
            FiringState.COMMITTED,
            sched.payload_id,
            lane,
            catchup=catchup,
        )

    made = await store.insert_firings(
        [firing(i, "bulk" if i % 2 else "default", i % 3 == 0) for i in range(12)]
    )
    by_key = {rec.key: rec.id for rec, _ in made}
    [tb] = await store.dispatch([b], fire_at(T0))
    await store.start_run(tb, None, T0)  # running: not committed, never read back

    async def page(lane: str, catchup: bool, first: int, last: int, limit: int) -> list[str]:
        rows = await store.ready_page(
            lane=lane, catchup=catchup, first_id=first, last_id=last, limit=limit
        )
        return [r.key for r in rows]

    fresh_default = [f"a@{i}" for i in (2, 4, 8, 10)]
    assert await page("default", False, 0, 2**62, 10) == fresh_default
    assert await page("default", False, 0, 2**62, 2) == fresh_default[:2], "limit, in id order"
    assert await page("default", False, by_key["a@4"], by_key["a@8"], 10) == ["a@4", "a@8"]
    assert await page("bulk", True, 0, 2**62, 10) == ["a@3", "a@9"]
    assert all(
        r.catchup
        for r in await store.ready_page(
            lane="bulk", catchup=True, first_id=0, last_id=2**62, limit=10
        )
    )
    spans = {(s.lane, s.catchup): s for s in await store.ready_spans()}
    assert {k: v.count for k, v in spans.items()} == {
        ("default", False): 4,
        ("default", True): 2,
        ("bulk", False): 4,
        ("bulk", True): 2,
    }
    assert (spans["default", True].first_id, spans["default", True].last_id) == (
        by_key["a@0"],
        by_key["a@6"],
    )
    assert await store.committed_by_schedule() == {a: 12}, "b's firing is running"
    assert sum(d.catchup for d in await store.lanes()) == 4, "the catch-up backlog"


async def test_lists_are_paginated_newest_first(store: SqliteStore) -> None:
    await add(store, spec("a"), spec("b"))
    a, b = await ids(store)
    for i, sid in enumerate([a, b, a]):
        [t] = await store.dispatch([sid], fire_at(T0 + i * 20_000))
        await store.start_run(t, None, T0)
    page1 = await store.list_runs(schedule=None, limit=2)
    page2 = await store.list_runs(schedule=None, limit=2, before_id=page1[-1].id)
    assert [r.id for r in page1 + page2] == sorted((r.id for r in page1 + page2), reverse=True)
    assert len(page1 + page2) == 3
    assert {r.schedule for r in await store.list_runs(schedule="a", limit=10)} == {"a"}
    names = [s.spec.name for s in await store.list_schedules(limit=1)]
    names += [s.spec.name for s in await store.list_schedules(limit=1, after_name=names[-1])]
    assert names == ["a", "b"]


async def test_payload_is_stored_apart_and_shared(store: SqliteStore) -> None:
    await add(store, spec("a", argv=("echo", "x")), spec("b", argv=("echo", "x")))
    a, b = await ids(store)
    [ta] = await store.dispatch([a], fire_at(T0))
    [tb] = await store.dispatch([b], fire_at(T0))
    assert ta.payload_id == tb.payload_id
    assert '"command":["echo","x"]' in await store.load_payload(ta.payload_id)


async def test_one_shot_schedule_without_next_is_never_due(store: SqliteStore) -> None:
    one = ScheduleSpec(name="once", trigger=OnceSpec(T0), task=CommandTask(("true",)))
    await store.reconcile([one], initial=lambda s, hw: (None, None), now_ms=T0)
    assert await ids(store) == []


async def test_the_due_index_says_each_schedules_task_kind_and_lane(store: SqliteStore) -> None:
    """The dispatcher pre-scales for Python tasks and commits urgent lanes first, from the loader
    alone (no payload or rule decoded)."""
    py = ScheduleSpec("py", IntervalSpec(10_000), PythonTask("os:getpid"), lane="critical")
    await add(store, spec("cmd"), py)
    rows = await store.due_schedules(after=None, until_ms=2**62, limit=10)
    assert [(r[2], r[3]) for r in rows] == [(False, "default"), (True, "critical")]


async def test_the_loader_pages_through_a_shared_due_time_in_order_and_stops_at_until(
    store: SqliteStore,
) -> None:
    """Pages resume inside a due time many schedules share (a pulse) and never pass ``until``."""
    due = {f"s{i}": T0 + (0 if i < 5 else 1 if i < 7 else 5) for i in range(8)}
    await store.reconcile(
        [spec(name) for name in due], initial=lambda s, hw: (due[s.name], due[s.name]), now_ms=T0
    )
    seen: list[tuple[int, int]] = []
    after: tuple[int, int] | None = None
    while page := await store.due_schedules(after=after, until_ms=T0 + 1, limit=2):
        seen += [(r[0], r[1]) for r in page]
        after = seen[-1]
    assert seen == sorted(set(seen)), "in (due, id) order, none twice"
    assert [d for d, _ in seen] == [T0] * 5 + [T0 + 1] * 2


async def test_a_store_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SqliteStore(path)
    await s.open()
    await s.close()
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA user_version = 99")
    with pytest.raises(Unavailable, match="newer"):
        await SqliteStore(path).open()
    # A failed open must close its connections: a live aiosqlite thread keeps the process from
    # exiting. Closed threads end right after close() returns, so join them with a bound.
    for t in threading.enumerate():
        if "_connection_worker_thread" in t.name:
            t.join(timeout=10)
            assert not t.is_alive(), f"{t.name} leaked"


async def test_writes_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SqliteStore(path)
    await s.open()
    await add(s, spec("a"))
    [sid] = await ids(s)
    [t] = await s.dispatch([sid], fire_at(T0))
    await s.close()
    s2 = SqliteStore(path)
    await s2.open()
    try:
        assert (await s2.get_firing(t.key)).state is FiringState.COMMITTED
        assert (await s2.info()).schema_version == SCHEMA_VERSION
    finally:
        await s2.close()


# --- retries and the dead-letter queue ----------------------------------------------------------


async def test_a_failed_firing_is_retried_with_the_same_key_and_next_attempt(
    store: SqliteStore,
) -> None:
    t = await committed(store)
    await run_once(store, t, FiringState.FAILED, at=T0, crashed=True, retry_at=T0 + 5_000)
    f = await store.get_firing(t.key)
    assert (f.state, f.retry_at_ms, f.crashes) == (FiringState.FAILED, T0 + 5_000, 1)
    assert await store.due_retries(after=None, until_ms=T0 + 4_999, limit=10) == []
    assert await store.due_retries(after=None, until_ms=T0 + 5_000, limit=10) == [
        (T0 + 5_000, t.firing_id)
    ]
    early = await store.start_retries([t.firing_id], T0 + 4_999)
    assert (early.tickets, early.not_due) == ((), ((T0 + 5_000, t.firing_id),)), "never early"
    batch = await store.start_retries([t.firing_id], T0 + 5_000)
    [again] = batch.tickets
    assert (again.key, again.attempt, again.crashes) == (t.key, 2, 1)
    f = await store.get_firing(t.key)
    assert (f.state, f.retry_at_ms) == (FiringState.COMMITTED, None)
    assert (await store.start_retries([t.firing_id], T0 + 9_000)).tickets == (), "only once"


async def test_a_scheduled_firing_wakes_at_its_due_time_with_its_first_attempt(
    store: SqliteStore,
) -> None:
    failed = await committed(store, "a")
    await run_once(store, failed, FiringState.FAILED, at=T0, retry_at=T0 + 5_000)
    [(later, _)] = await store.insert_firings(
        [new_firing("b@later", failed.payload_id, due=T0 + 5_000, state=FiringState.SCHEDULED)]
    )
    due = await store.due_retries(after=None, until_ms=T0 + 5_000, limit=10)
    assert due == [(T0 + 5_000, failed.firing_id), (T0 + 5_000, later.id)]
    assert await store.due_retries(after=None, until_ms=T0 + 4_999, limit=10) == []
    early = await store.start_retries([later.id, failed.firing_id], T0 + 4_999)
    assert early.tickets == ()
    assert sorted(early.not_due) == [(T0 + 5_000, failed.firing_id), (T0 + 5_000, later.id)]
    assert (await store.get_firing("b@later")).state is FiringState.SCHEDULED, "never early"
    batch = await store.start_retries([later.id, failed.firing_id], T0 + 5_000)
    assert [(t.key, t.attempt) for t in batch.tickets] == [(failed.key, 2), ("b@later", 1)]
    woke = await store.get_firing("b@later")
    assert (woke.state, woke.attempt, woke.retry_at_ms) == (FiringState.COMMITTED, 1, None)
    assert (await store.start_retries([later.id], T0 + 9_000)).tickets == (), "only once"


async def test_retry_cursor_pages_through_due_retries(store: SqliteStore) -> None:
    tickets = [await committed(store, n) for n in ("a", "b", "c")]
    for i, t in enumerate(tickets):
        await run_once(store, t, FiringState.FAILED, at=T0, retry_at=T0 + 100 * (3 - i))
    page = await store.due_retries(after=None, until_ms=T0 + 1_000, limit=2)
    rest = await store.due_retries(after=page[-1], until_ms=T0 + 1_000, limit=2)
    assert [fid for _, fid in page + rest] == [t.firing_id for t in reversed(tickets)]


async def test_the_dead_letter_queue_lists_requeues_and_purges(store: SqliteStore) -> None:
    dead = await committed(store, "a")
    poison = await committed(store, "b")
    alive = await committed(store, "c")
    await run_once(store, dead, FiringState.DEAD, at=T0)
    await run_once(store, poison, FiringState.FAILED, at=T0, crashed=True, retry_at=T0)
    [p2] = (await store.start_retries([poison.firing_id], T0 + 10)).tickets
    await run_once(store, p2, FiringState.QUARANTINED, at=T0 + 20, crashed=True)
    listed = await store.list_dead(schedule=None, limit=10)
    assert [(f.key, f.state, f.crashes) for f in listed] == [
        (poison.key, FiringState.QUARANTINED, 2),
        (dead.key, FiringState.DEAD, 0),
    ]
    assert [f.key for f in await store.list_dead(schedule="a", limit=10)] == [dead.key]
    assert await store.oldest_dead_ms() == T0 + 1
    runs = await store.runs_of(poison.firing_id)
    assert [(r.attempt, r.signal, r.output) for r in runs] == [(1, 9, b"out"), (2, 9, b"out")]

    with pytest.raises(IllegalTransition, match="not in the dead-letter queue"):
        await store.requeue(alive.firing_id, T0 + 30)
    assert (await store.get_firing(alive.key)).state is FiringState.COMMITTED
    again = await store.requeue(poison.firing_id, T0 + 30)
    assert (again.key, again.attempt, again.crashes) == (poison.key, 3, 2)

    assert await store.purge_dead(firing_ids=[alive.firing_id], older_than_ms=None) == 0
    assert await store.purge_dead(firing_ids=None, older_than_ms=T0) == 0, "newer kept"
    assert await store.purge_dead(firing_ids=None, older_than_ms=T0 + 100) == 1
    with pytest.raises(NotFound):
        await store.get_firing(dead.key)
    assert await store.runs_of(dead.firing_id) == []
    assert await store.oldest_dead_ms() is None
    assert (await store.get_firing(alive.key)).state is FiringState.COMMITTED


async def test_purging_drops_payloads_nothing_references(store: SqliteStore) -> None:
    t = await committed(store, "a")
    await run_once(store, t, FiringState.DEAD, at=T0)
    await store.reconcile([], initial=at_now, now_ms=T0)  # the schedule goes; its firing stays
    assert await store.load_payload(t.payload_id)
    assert await store.purge_dead(firing_ids=[t.firing_id], older_than_ms=None) == 1
    with pytest.raises(NotFound):
        await store.load_payload(t.payload_id)
    # SQLite gives the freed id to the next new body: read as that body, not the purged one.
    b = await committed(store, "b", argv=("echo", "b"))
    assert b.payload_id == t.payload_id
    assert "echo" in await store.load_payload(b.payload_id)


async def test_a_version_1_store_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_store(
        path,
        1,
        "INSERT INTO firings (key, schedule, scheduled_for_ms, due_ms, state, attempt,"
        " payload_id, lane, created_ms, updated_ms) VALUES ('k', 's', 1, 1, 'dead', 1, 1,"
        " 'default', 1, 1)",
    )
    s = SqliteStore(path)
    await s.open()
    try:
        assert (await s.info()).schema_version == SCHEMA_VERSION
        f = await s.get_firing("k")
        assert (f.state, f.retry_at_ms) == (FiringState.DEAD, None)
        assert [x.key for x in await s.list_dead(schedule=None, limit=5)] == ["k"]
    finally:
        await s.close()


def old_store(path: Path, version: int, *rows: str) -> None:
    """A store as schema ``version`` left it, holding ``rows`` (INSERT statements)."""
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:version]:
        for stmt in migration:
            conn.execute(stmt)
    conn.execute("INSERT INTO payloads (sha256, size, body) VALUES ('x', 1, '{}')")
    for row in rows:
        conn.execute(row)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


async def test_a_version_2_store_is_migrated_and_its_waiting_firings_wake(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    insert = (
        "INSERT INTO firings (key, schedule, scheduled_for_ms, due_ms, state, attempt,"
        " payload_id, lane, created_ms, updated_ms, retry_at_ms) VALUES"
    )
    old_store(
        path,
        2,
        f"{insert} ('failed', 's', 1, 1, 'failed', 1, 1, 'default', 1, 1, 50)",
        f"{insert} ('later', 's', 40, 40, 'scheduled', 1, 1, 'default', 1, 1, NULL)",
        f"{insert} ('done', 's', 1, 1, 'succeeded', 1, 1, 'default', 1, 1, NULL)",
    )
    s = SqliteStore(path)
    await s.open()
    try:
        assert (await s.info()).schema_version == SCHEMA_VERSION
        later, failed = await s.get_firing("later"), await s.get_firing("failed")
        assert later.retry_at_ms == 40, "a firing left scheduled wakes at its due time"
        assert await s.due_retries(after=None, until_ms=100, limit=5) == [
            (40, later.id),
            (50, failed.id),
        ]
        assert (await s.get_firing("done")).retry_at_ms is None
    finally:
        await s.close()
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    assert "firings_wake" in indexes
    assert "firings_retry" not in indexes


async def finish_ok(store: SqliteStore, t: Ticket, run_id: int, at: int) -> None:
    await store.finish_run(
        run_id,
        RunFinish(
            t.firing_id,
            "succeeded",
            FiringState.SUCCEEDED,
            at,
            0,
            None,
            None,
            b"",
            0,
            False,
        ),
    )


async def test_last_successes_is_the_latest_end_of_a_succeeded_run_per_name(
    store: SqliteStore,
) -> None:
    await add(store, spec("a"), spec("b"), spec("c"))
    a, b, c = await ids(store)
    [a1] = await store.dispatch([a], fire_at(T0))
    [a2] = await store.dispatch([a], fire_at(T0 + 20_000))
    [a3] = await store.dispatch([a], fire_at(T0 + 40_000))
    a1_run = await store.start_run(a1, None, T0)
    a2_run = await store.start_run(a2, None, T0 + 20_000)
    await finish_ok(store, a2, a2_run, T0 + 21_000)
    await finish_ok(store, a1, a1_run, T0 + 30_000)  # overlapping: started first, ended last
    await run_once(store, a3, FiringState.DEAD, at=T0 + 40_000)  # a later failure changes nothing
    [b1] = await store.dispatch([b], fire_at(T0))
    await run_once(store, b1, FiringState.DEAD, at=T0)
    [c1] = await store.dispatch([c], fire_at(T0))
    await finish_ok(store, c1, await store.start_run(c1, None, T0), T0 + 7)
    await store.remove_schedule("c")
    assert await store.last_successes() == {"a": T0 + 30_000, "c": T0 + 7}
