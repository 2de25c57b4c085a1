"""The store contract's operator half: schedule CRUD, submissions, run filters, the backlog.

Written against the contract only, like ``test_contract.py``.
"""

from __future__ import annotations

import dataclasses

import pytest

from schedd.errors import Conflict, InvalidArgument, NotFound
from schedd.model import CommandTask, FiringState, Policies, ScheduleSpec, Source
from schedd.payload import encode_payload
from schedd.store.contract import ScheduleToAdd
from schedd.store.records import (
    BacklogGroup,
    BacklogItem,
    LaneDepth,
    NewFiring,
    Ticket,
)
from schedd.store.sqlite import SqliteStore
from tests.store.helpers import T0, add, at_now, committed, fire_at, ids, run_once, spec

S = FiringState


def body(*argv: str) -> str:
    return encode_payload(CommandTask(argv), Policies())


def adhoc(
    key: str, *, due: int = T0, state: FiringState = S.COMMITTED, lane: str = "default"
) -> NewFiring:
    return NewFiring(key, None, "@submit", due, due, state, 0, lane, reason="submitted")


async def fired(store: SqliteStore, name: str, occ: int) -> Ticket:
    [t] = await store.dispatch([(await store.get_schedule(name)).id], fire_at(occ))
    return t


# --- schedules ------------------------------------------------------------------------------


async def test_add_schedule_stores_an_api_schedule_sharing_the_config_payload(
    store: SqliteStore,
) -> None:
    await add(store, spec("a", argv=("echo", "x")))
    b = dataclasses.replace(spec("b", argv=("echo", "x")), source=Source.API)
    rec = await store.add_schedule(
        b, next_fire_ms=T0 + 1, next_due_ms=T0 + 2, paused=True, now_ms=T0 + 3
    )
    assert (rec.spec, rec.paused, rec.next_fire_ms, rec.next_due_ms) == (b, True, T0 + 1, T0 + 2)
    assert (rec.created_ms, rec.updated_ms, rec.fired_through_ms) == (T0 + 3, T0 + 3, None)
    assert rec == await store.get_schedule("b")
    assert rec.spec.source is Source.API
    assert rec.payload_id == (await store.get_schedule("a")).payload_id, "content-addressed"
    assert await ids(store) == [(await store.get_schedule("a")).id], "a paused schedule waits"


async def test_add_schedule_refuses_a_taken_name_saying_where_it_came_from(
    store: SqliteStore,
) -> None:
    await add(store, spec("a"))
    await store.add_schedule(
        dataclasses.replace(spec("b"), source=Source.API),
        next_fire_ms=T0,
        next_due_ms=T0,
        paused=False,
        now_ms=T0,
    )
    for name, origin in (("a", "config file"), ("b", "admin API")):
        with pytest.raises(Conflict, match=f"'{name}'.*{origin}"):
            await store.add_schedule(
                dataclasses.replace(spec(name, argv=("false",)), source=Source.API),
                next_fire_ms=None,
                next_due_ms=None,
                paused=False,
                now_ms=T0,
            )
    assert (await store.get_schedule("b")).spec.task == CommandTask(("true",)), "unchanged"
    summary = await store.reconcile([spec("a")], initial=at_now, now_ms=T0)
    assert (summary.removed, summary.unchanged) == ((), 1), "reconcile leaves api schedules"


def api(name: str, argv: tuple[str, ...] = ("true",)) -> ScheduleSpec:
    return dataclasses.replace(spec(name, argv=argv), source=Source.API)


async def test_add_schedules_stores_many_in_input_order_as_add_schedule_would(
    store: SqliteStore,
) -> None:
    await add(store, spec("config", argv=("echo", "x")))
    # More than one INSERT statement and one name-check chunk hold, in an order unlike the ids'.
    names = [f"s{i:04d}" for i in range(2500)][::-1]
    wanted = [
        ScheduleToAdd(api(n, ("echo", "x") if i % 2 else ("true",)), T0 + i, T0 + i, i % 3 == 0)
        for i, n in enumerate(names)
    ]
    recs = await store.add_schedules(wanted, now_ms=T0 + 7)
    assert [r.spec for r in recs] == [w.spec for w in wanted]
    assert [(r.next_fire_ms, r.next_due_ms, r.paused) for r in recs] == [
        (w.next_fire_ms, w.next_due_ms, w.paused) for w in wanted
    ]
    assert len({r.id for r in recs}) == len(recs)
    for r in (recs[0], recs[1], recs[-1]):
        assert r == await store.get_schedule(r.spec.name), "as stored, id and payload included"
    assert {r.payload_id for r in recs[1::2]} == {(await store.get_schedule("config")).payload_id}
    assert await store.count_schedules() == 2501
    due = await store.due_schedules(after=None, until_ms=2**62, limit=10_000)
    assert len(due) == 1 + sum(not w.paused for w in wanted), "paused ones wait"


async def test_add_schedules_adds_nothing_when_one_name_is_taken_or_repeated(
    store: SqliteStore,
) -> None:
    await add(store, spec("a"))
    await store.add_schedules([ScheduleToAdd(api("b"), T0, T0)], now_ms=T0)
    batch = [ScheduleToAdd(api(n), T0, T0) for n in ("new1", "b", "new2", "a")]
    with pytest.raises(Conflict, match=r"'b'.*admin API.*1 more.*nothing was added"):
        await store.add_schedules(batch, now_ms=T0)
    twice = [ScheduleToAdd(api(n), T0, T0) for n in ("new1", "new2", "new1")]
    with pytest.raises(InvalidArgument, match="'new1' is given twice"):
        await store.add_schedules(twice, now_ms=T0)
    assert [s.spec.name for s in await store.list_schedules(limit=10)] == ["a", "b"]
    with pytest.raises(Conflict, match=r"'a'.*config file"):
        await store.add_schedule(api("a"), next_fire_ms=T0, next_due_ms=T0, paused=False, now_ms=T0)


async def test_reconcile_refuses_a_config_name_an_api_schedule_holds_and_keeps_api_ones(
    store: SqliteStore,
) -> None:
    await add(store, spec("c1"), spec("c2"))
    await store.add_schedules([ScheduleToAdd(api(n), T0, T0) for n in ("a1", "a2")], now_ms=T0)
    with pytest.raises(Conflict, match=r"schedules\.a2: .*admin API"):
        await store.reconcile([spec("c1"), spec("new"), spec("a2")], initial=at_now, now_ms=T0)
    assert [s.spec.name for s in await store.list_schedules(limit=10)] == ["a1", "a2", "c1", "c2"]
    summary = await store.reconcile([spec("c2", argv=("false",))], initial=at_now, now_ms=T0)
    assert (summary.added, summary.changed, summary.removed) == ((), ("c2",), ("c1",))
    assert [s.spec.name for s in await store.list_schedules(limit=10)] == ["a1", "a2", "c2"]


async def test_remove_schedule_returns_it_and_keeps_its_history(store: SqliteStore) -> None:
    await add(store, spec("a"), spec("c"))
    t = await fired(store, "a", T0)
    before = await store.get_schedule("a")
    removed = await store.remove_schedule("a")
    assert removed == before
    with pytest.raises(NotFound, match="'a'"):
        await store.get_schedule("a")
    with pytest.raises(NotFound, match="'a'"):
        await store.remove_schedule("a")
    assert (await store.get_firing(t.key)).state is S.COMMITTED
    assert await store.load_payload(t.payload_id)
    assert [s.spec.name for s in await store.list_schedules(limit=10)] == ["c"]


async def test_set_paused_is_idempotent_and_survives_reconcile(store: SqliteStore) -> None:
    await add(store, spec("a"))
    [sid] = await ids(store)
    paused = await store.set_paused("a", True, T0 + 5)
    assert (paused.paused, paused.updated_ms) == (True, T0 + 5)
    assert await ids(store) == []
    assert (await store.set_paused("a", True, T0 + 9)).updated_ms == T0 + 5, "no change, no move"
    changed = await store.reconcile([spec("a", argv=("false",))], initial=at_now, now_ms=T0 + 10)
    assert changed.changed == ("a",)
    assert (await store.get_schedule("a")).paused, "a reload keeps the flag"
    resumed = await store.set_paused("a", False, T0 + 20)
    assert (resumed.paused, resumed.updated_ms) == (False, T0 + 20)
    assert await ids(store) == [sid]
    with pytest.raises(NotFound, match="'zzz'"):
        await store.set_paused("zzz", True, T0)


# --- submissions ----------------------------------------------------------------------------


async def test_submit_stores_the_payload_with_the_firing_once_per_key(store: SqliteStore) -> None:
    await add(store, spec("a", argv=("echo", "x")))
    rec, created = await store.submit(adhoc("k1"), body("echo", "x"))
    assert created
    assert (rec.key, rec.schedule, rec.state, rec.attempt) == ("k1", "@submit", S.COMMITTED, 1)
    assert rec.payload_id == (await store.get_schedule("a")).payload_id, "content-addressed"
    assert rec == await store.get_firing("k1")

    again, created = await store.submit(adhoc("k1", due=T0 + 9), body("echo", "other"))
    assert (again, created) == (rec, False), "an existing key answers the stored firing"

    other, _ = await store.submit(adhoc("k2"), body("echo", "other"))
    assert other.payload_id != rec.payload_id
    assert await store.load_payload(other.payload_id) == body("echo", "other")


async def test_a_submission_for_later_is_scheduled_to_wake_at_its_time(store: SqliteStore) -> None:
    rec, _ = await store.submit(adhoc("later", due=T0 + 60_000, state=S.SCHEDULED), body("x"))
    assert (rec.state, rec.retry_at_ms) == (S.SCHEDULED, T0 + 60_000)
    assert await store.due_retries(after=None, until_ms=T0 + 60_000, limit=5) == [
        (T0 + 60_000, rec.id)
    ]


# --- runs -----------------------------------------------------------------------------------


async def test_list_runs_filters_by_state_start_and_key(store: SqliteStore) -> None:
    ta = await committed(store, "a")
    r1 = await run_once(store, ta, S.FAILED, at=T0, retry_at=T0 + 10)
    [ta2] = (await store.start_retries([ta.firing_id], T0 + 10)).tickets
    r2 = await store.start_run(ta2, None, T0 + 20)
    tb = await committed(store, "b")
    r3 = await run_once(store, tb, S.QUARANTINED, at=T0 + 50, crashed=True)

    async def runs(**filters: object) -> list[int]:
        found = await store.list_runs(**{"limit": 10, **filters})  # type: ignore[arg-type]
        return [r.id for r in found]

    assert await runs(schedule=None) == [r3, r2, r1]
    assert await runs(schedule=None, states=["failed"]) == [r1]
    assert await runs(schedule=None, states=["running", "crash"]) == [r3, r2]
    assert await runs(schedule=None, since_ms=T0 + 20) == [r3, r2]
    assert await runs(schedule=None, key=ta.key) == [r2, r1]
    assert await runs(schedule=None, key=ta.key, states=["failed"], since_ms=T0) == [r1]
    assert await runs(schedule=None, key=ta.key, since_ms=T0 + 21) == []
    assert await runs(schedule="b", key=ta.key) == []
    assert await runs(schedule=None, key=ta.key, limit=1, before_id=r2) == [r1]


# --- the backlog, lanes, removal ------------------------------------------------------------


async def test_backlog_groups_open_firings_and_finds_the_largest(store: SqliteStore) -> None:
    await add(store, spec("a", argv=("echo", "a")), spec("b", argv=("echo", "b")))
    first_a = await fired(store, "a", T0)
    for occ in (T0 + 10_000, T0 + 20_000):
        await fired(store, "a", occ)
    running = await fired(store, "b", T0)
    await store.start_run(running, None, T0)
    await run_once(store, await fired(store, "b", T0 + 10_000), S.FAILED, at=T0, retry_at=T0 + 1)
    await run_once(store, await fired(store, "b", T0 + 20_000), S.DEAD, at=T0)
    small, _ = await store.submit(adhoc("s1", due=T0 + 60_000, state=S.SCHEDULED), "x" * 1_000)
    big, _ = await store.submit(adhoc("s2", due=T0 + 70_000, state=S.SCHEDULED), "y" * 2_000)
    size = len((await store.load_payload(running.payload_id)).encode())

    b = await store.backlog(schedule=None, top=3)
    assert b.groups == (
        BacklogGroup("a", "default", S.COMMITTED, 3, T0, 3 * size),
        BacklogGroup("@submit", "default", S.SCHEDULED, 2, T0 + 60_000, 3_000),
        BacklogGroup("b", "default", S.FAILED, 1, T0 + 10_000, size),
        BacklogGroup("b", "default", S.RUNNING, 1, T0, size),
    ), "open states only, most first, then by schedule, lane, state"
    assert b.largest == (
        BacklogItem(big.id, "s2", "@submit", S.SCHEDULED, T0 + 70_000, 2_000),
        BacklogItem(small.id, "s1", "@submit", S.SCHEDULED, T0 + 60_000, 1_000),
        BacklogItem(first_a.firing_id, first_a.key, "a", S.COMMITTED, T0, size),
    ), "largest first, ties by id"
    assert (b.count, b.payload_bytes) == (7, 3_000 + 5 * size)

    only_b = await store.backlog(schedule="b", top=0)
    assert [g.state for g in only_b.groups] == [S.FAILED, S.RUNNING]
    assert (only_b.largest, only_b.count, only_b.payload_bytes) == ((), 2, 2 * size)
    assert await store.backlog(schedule="nope", top=5) == type(b)((), (), 0, 0)


async def test_lanes_count_ready_and_running_firings(store: SqliteStore) -> None:
    await add(store, spec("a"))
    await fired(store, "a", T0 + 30)
    await fired(store, "a", T0 + 10_030)
    await store.submit(adhoc("bulk-1", due=T0 + 5, lane="bulk"), body("1"))
    await store.submit(adhoc("bulk-later", due=T0 + 1, lane="bulk", state=S.SCHEDULED), body("2"))
    solo, _ = await store.submit(adhoc("solo", lane="solo"), body("3"))
    await store.start_run(solo.ticket(), None, T0)
    running_default, _ = await store.submit(adhoc("d", due=T0 + 1), body("4"))
    await store.start_run(running_default.ticket(), None, T0)
    done, _ = await store.submit(adhoc("done", lane="gone"), body("5"))
    await run_once(store, done.ticket(), S.DEAD, at=T0)

    assert await store.lanes() == [
        LaneDepth("bulk", ready=1, running=0, oldest_ready_due_ms=T0 + 5),
        LaneDepth("default", ready=2, running=1, oldest_ready_due_ms=T0 + 30),
        LaneDepth("solo", ready=0, running=1, oldest_ready_due_ms=None),
    ]


async def test_lanes_count_catch_up_firings_apart_and_take_the_oldest_due_of_both_kinds(
    store: SqliteStore,
) -> None:
    await add(store, spec("a"))
    [a] = await ids(store)
    payload = (await store.get_schedule("a")).payload_id

    def firing(key: str, lane: str, due: int, *, catchup: bool) -> NewFiring:
        return NewFiring(key, a, "a", due, due, S.COMMITTED, payload, lane, catchup=catchup)

    await store.insert_firings(
        [
            firing("k1", "default", T0 + 50, catchup=False),
            firing("k2", "default", T0 + 7, catchup=True),
            firing("k3", "default", T0 + 9, catchup=True),
            firing("k4", "late", T0 + 3, catchup=True),
        ]
    )

    assert await store.lanes() == [
        LaneDepth("default", ready=3, running=0, oldest_ready_due_ms=T0 + 7, catchup=2),
        LaneDepth("late", ready=1, running=0, oldest_ready_due_ms=T0 + 3, catchup=1),
    ]


async def test_remove_firings_cancels_matching_queued_firings_in_batches(
    store: SqliteStore,
) -> None:
    bad = body("import", "BROKEN-ARG")
    f1, _ = await store.submit(adhoc("submit:1"), bad)
    f2, _ = await store.submit(adhoc("submit:2"), body("other", "BROKEN-ARG"))
    f3, _ = await store.submit(adhoc("submit:bad-3"), body("fine"))
    f4, _ = await store.submit(adhoc("submit:4"), body("fine"))
    f5, _ = await store.submit(adhoc("submit:5", due=T0 + 9_000, state=S.SCHEDULED), bad)
    live, _ = await store.submit(adhoc("submit:6"), bad)
    await store.start_run(live.ticket(), None, T0)
    await add(store, spec("x", argv=("BROKEN-ARG",)))
    await fired(store, "x", T0)
    await fired(store, "x", T0 + 10_000)
    queued = [S.SCHEDULED, S.COMMITTED, S.FAILED]

    async def remove(**kw: object) -> tuple[int, list[int], list[str]]:
        args: dict[str, object] = {
            "schedule": "@submit",
            "match": "BROKEN-ARG",
            "states": queued,
            "limit": 1000,
            "dry_run": False,
            "now_ms": T0 + 100,
            **kw,
        }
        r = await store.remove_firings(**args)  # type: ignore[arg-type]
        if r.removed:
            assert list(r.sample) == [f.key for f in r.removed][:20]
        return r.matched, [f.id for f in r.removed], list(r.sample)

    assert await remove(dry_run=True) == (3, [], ["submit:1", "submit:2", "submit:5"])
    assert (await store.get_firing("submit:1")).state is S.COMMITTED, "a dry run changes nothing"
    assert await remove(match="bad", dry_run=True) == (1, [], ["submit:bad-3"]), "keys match too"
    assert await remove(match="broken-arg", dry_run=True) == (0, [], []), "case-sensitive"
    assert (await remove(schedule="x", dry_run=True))[0] == 2, "a shared payload matches each"

    assert await remove(limit=2) == (3, [f1.id, f2.id], ["submit:1", "submit:2"])
    gone = await store.get_firing("submit:1")
    assert (gone.state, gone.reason, gone.updated_ms) == (
        S.CANCELLED,
        "removed by an operator",
        T0 + 100,
    )
    assert await remove(limit=2) == (1, [f5.id], ["submit:5"])
    later = await store.get_firing("submit:5")
    assert (later.state, later.retry_at_ms) == (S.CANCELLED, None)
    assert await store.due_retries(after=None, until_ms=T0 + 9_000, limit=5) == []
    assert await remove() == (0, [], [])
    assert (await store.get_firing("submit:6")).state is S.RUNNING, "running is never removed"

    assert await remove(match=None, states=[S.COMMITTED]) == (
        2,
        [f3.id, f4.id],
        ["submit:bad-3", "submit:4"],
    )
    assert await store.count_firings_of("x", [S.COMMITTED]) == 2, "other schedules untouched"


async def test_remove_firings_refuses_running_states_and_empty_batches(
    store: SqliteStore,
) -> None:
    rec, _ = await store.submit(adhoc("k"), body("x"))
    for states, limit, message in (
        ([S.COMMITTED, S.RUNNING], 10, "running"),
        ([S.SUCCEEDED], 10, "succeeded"),
        ([S.COMMITTED], 0, "limit"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            await store.remove_firings(
                schedule="@submit",
                match=None,
                states=states,
                limit=limit,
                dry_run=False,
                now_ms=T0,
            )
    assert (await store.get_firing("k")).state is S.COMMITTED
    assert rec.state is S.COMMITTED
