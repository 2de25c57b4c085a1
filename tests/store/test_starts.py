"""Runs' starts written together (:mod:`schedd.store.starts`).

Each test holds the writer with a gate unit (a unit that waits inside its transaction), starts
runs meanwhile so they join one group, then lets the writer go: what each start's caller gets
and what is stored must be exactly what one start at a time gives.
"""

from __future__ import annotations

import asyncio

import pytest

from schedd.errors import IllegalTransition
from schedd.model import FiringState
from schedd.store import starts
from schedd.store.records import ProcessRef, RunFinish, Ticket
from schedd.store.sqlite import SqliteStore
from schedd.store.writer import Conn
from tests.store.helpers import T0, add, fire_at, ids, spec


class Gate:
    """Holds the writer inside a transaction until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, conn: Conn) -> None:
        self.entered.set()
        await self.release.wait()


async def committed_tickets(store: SqliteStore, n: int) -> list[Ticket]:
    await add(store, *(spec(f"s{i}") for i in range(n)))
    return await store.dispatch(await ids(store), fire_at(T0))


def succeeded(t: Ticket) -> RunFinish:
    return RunFinish(
        t.firing_id, "succeeded", FiringState.SUCCEEDED, T0 + 9, 0, None, None, b"out", 3, False
    )


async def test_starts_that_wait_together_are_one_unit_and_each_gets_its_own_row(
    store: SqliteStore,
) -> None:
    ts = await committed_tickets(store, 5)
    gate = Gate()
    held = asyncio.create_task(store.writer.run(gate))
    await gate.entered.wait()
    units = store.writer.units
    whole = succeeded(ts[1])
    runs = [
        asyncio.create_task(
            store.start_run(
                t,
                ProcessRef(100 + i, 100 + i, 7),
                T0 + i,
                (lambda: whole) if i == 1 else lambda: None,
            )
        )
        for i, t in enumerate(ts)
    ]
    gate.release.set()
    await held
    run_ids = await asyncio.gather(*runs)
    assert store.writer.units - units == 2, "the gate's unit, then one for all five starts"
    assert len(set(run_ids)) == 5
    for i, (t, run_id) in enumerate(zip(ts, run_ids, strict=True)):
        [run] = await store.runs_of(t.firing_id)
        assert (run.id, run.process, run.started_ms) == (
            run_id,
            ProcessRef(100 + i, 100 + i, 7),
            T0 + i,
        )
        firing = await store.get_firing(t.key)
        if i == 1:  # ended before its group was written: stored whole, its firing ended
            assert (run.state, run.ended_ms, run.output_bytes) == ("succeeded", T0 + 9, 3)
            assert firing.state is FiringState.SUCCEEDED
        else:
            assert (run.state, run.ended_ms) == ("running", None)
            assert (firing.state, firing.updated_ms) == (FiringState.RUNNING, T0 + i)


async def test_a_refused_start_fails_alone_and_its_group_is_stored_as_one_at_a_time_would(
    store: SqliteStore,
) -> None:
    ts = await committed_tickets(store, 3)
    await store.set_firing_state(ts[1].firing_id, FiringState.CANCELLED, reason="x", now_ms=T0)
    gate = Gate()
    held = asyncio.create_task(store.writer.run(gate))
    await gate.entered.wait()
    runs = [asyncio.create_task(store.start_run(t, None, T0 + 5)) for t in ts]
    gate.release.set()
    await held
    first, refused, last = await asyncio.gather(*runs, return_exceptions=True)
    assert isinstance(refused, IllegalTransition)
    assert "cancelled -> running" in str(refused)
    assert isinstance(first, int)
    assert isinstance(last, int)
    assert [r.id for r in await store.runs_of(ts[0].firing_id)] == [first]
    assert [r.id for r in await store.runs_of(ts[2].firing_id)] == [last]
    assert await store.runs_of(ts[1].firing_id) == []
    assert (await store.get_firing(ts[1].key)).state is FiringState.CANCELLED
    assert (await store.get_firing(ts[2].key)).state is FiringState.RUNNING


async def test_a_run_waits_for_room_while_the_open_group_is_full(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(starts, "MAX_GROUP", 2)
    ts = await committed_tickets(store, 3)
    gate = Gate()
    held = asyncio.create_task(store.writer.run(gate))
    await gate.entered.wait()
    await store.room_for_run()  # an empty group has room
    runs = [asyncio.create_task(store.start_run(t, None, T0)) for t in ts[:2]]
    room = asyncio.create_task(store.room_for_run())
    await asyncio.sleep(0)  # one turn: the starts join the group, the room check looks at it
    assert not room.done(), "two starts waiting: the group is full"
    gate.release.set()
    await held
    await room  # the writer took the group
    await asyncio.gather(*runs)
    assert await store.start_run(ts[2], None, T0) > 0
