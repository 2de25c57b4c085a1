"""The ``dlq.*`` admin operations and the ``status`` dlq block, driven through ``AdminOps``.

Firings reach ``dead`` and ``quarantined`` through the real store, the way the runner puts them
there (dispatch, start_run, finish_run, start_retries), on SQLite in a temp dir. The runner is a
recorder of submitted tickets; the clock is fake, so ages and purge cut-offs are exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schedd.admin.ops import AdminOps
from schedd.admin.protocol import Request
from schedd.errors import Conflict, InvalidArgument, NotFound
from schedd.keys import firing_key, format_instant
from schedd.model import CommandTask, FiringState, IntervalSpec, ScheduleSpec
from schedd.store.records import (
    FiringRecord,
    NewFiring,
    ProcessRef,
    RunFinish,
    SchedulePlan,
    ScheduleRule,
    Ticket,
)
from schedd.store.sqlite import SqliteStore
from tests.component.adminharness import PEER, RecordingRunner, admin_ops
from tests.fakes import FakeClock

HOUR = 3_600_000
DAY = 24 * HOUR
POISON = ScheduleSpec(
    "poison",
    IntervalSpec(60_000),
    CommandTask(("sh", "-c", "echo dying; kill -9 $$")),
    tenant="acme",
)
FLAKY = ScheduleSpec("flaky", IntervalSpec(60_000), CommandTask(("false",)))


@dataclass
class Harness:
    ops: AdminOps
    store: SqliteStore
    runner: RecordingRunner
    clock: FakeClock
    occurrence: int = 0

    async def call(self, op: str, **args: Any) -> Any:
        return await self.ops.handle(Request(1, op, args), PEER)

    async def commit(self, spec: ScheduleSpec) -> Ticket:
        """A new committed firing of ``spec`` (each call the schedule's next occurrence)."""
        self.occurrence += 60_000
        occ = self.clock.wall_ms() + self.occurrence

        def plan(rule: ScheduleRule) -> SchedulePlan:
            new = NewFiring(
                firing_key(rule.name, occ),
                rule.id,
                rule.name,
                occ,
                occ,
                FiringState.COMMITTED,
                rule.payload_id,
                "default",
            )
            return SchedulePlan((new,), occ, None, None)

        sid = (await self.store.get_schedule(spec.name)).id
        [ticket] = await self.store.dispatch([sid], plan)
        return ticket

    async def run(
        self, ticket: Ticket, state: FiringState, *, at: int, retry_at: int | None = None
    ) -> None:
        """One attempt killed by SIGKILL, leaving its firing in ``state``."""
        run_id = await self.store.start_run(ticket, ProcessRef(4242, 4242, 7), at)
        output = f"attempt {ticket.attempt} dying\n".encode()
        await self.store.finish_run(
            run_id,
            RunFinish(
                ticket.firing_id,
                "crash",
                state,
                at + 5,
                None,
                9,
                "killed by SIGKILL",
                output,
                len(output),
                False,
                crashed=True,
                retry_at_ms=retry_at,
            ),
        )

    async def quarantined(self, *, at: int) -> FiringRecord:
        """A poison firing: crashed, retried, crashed again, quarantined at ``at + 5``."""
        first = await self.commit(POISON)
        await self.run(first, FiringState.FAILED, at=at - 100, retry_at=at - 50)
        [second] = (await self.store.start_retries([first.firing_id], at)).tickets
        await self.run(second, FiringState.QUARANTINED, at=at)
        return await self.store.get_firing_by_id(first.firing_id)

    async def dead(self, spec: ScheduleSpec = FLAKY, *, at: int) -> FiringRecord:
        """A firing whose only attempt failed for good, dead at ``at + 5``."""
        ticket = await self.commit(spec)
        run_id = await self.store.start_run(ticket, None, at)
        await self.store.finish_run(
            run_id,
            RunFinish(
                ticket.firing_id,
                "failed",
                FiringState.DEAD,
                at + 5,
                3,
                None,
                "exit status 3",
                b"",
                0,
                False,
            ),
        )
        return await self.store.get_firing_by_id(ticket.firing_id)

    async def succeeded(self) -> FiringRecord:
        ticket = await self.commit(FLAKY)
        now = self.clock.wall_ms()
        run_id = await self.store.start_run(ticket, None, now)
        await self.store.finish_run(
            run_id,
            RunFinish(
                ticket.firing_id,
                "succeeded",
                FiringState.SUCCEEDED,
                now,
                0,
                None,
                None,
                b"",
                0,
                False,
            ),
        )
        return await self.store.get_firing_by_id(ticket.firing_id)


@pytest.fixture
async def h(store: SqliteStore, clock: FakeClock, tmp_path: Path) -> Harness:
    await store.reconcile(
        [POISON, FLAKY], initial=lambda s, hw: (None, None), now_ms=clock.wall_ms()
    )
    runner = RecordingRunner()
    return Harness(admin_ops(tmp_path, store, clock, runner), store, runner, clock)


async def test_list_holds_only_dead_and_quarantined_firings_newest_first(h: Harness) -> None:
    now = h.clock.wall_ms()
    dead = await h.dead(at=now)
    await h.succeeded()
    poisoned = await h.quarantined(at=now)

    page = await h.call("dlq.list")
    assert [(f["id"], f["state"]) for f in page["firings"]] == [
        (poisoned.id, "quarantined"),
        (dead.id, "dead"),
    ]
    assert page["next"] is None
    first = page["firings"][0]
    assert (first["key"], first["attempt"], first["crashes"]) == (poisoned.key, 2, 2)
    assert first["updated_at"] == format_instant(now + 5)


async def test_list_pages_with_the_before_cursor_and_filters_by_schedule(h: Harness) -> None:
    now = h.clock.wall_ms()
    older = await h.dead(at=now)
    poisoned = await h.quarantined(at=now)
    newer = await h.dead(at=now)

    page1 = await h.call("dlq.list", limit=2)
    assert [f["id"] for f in page1["firings"]] == [newer.id, poisoned.id]
    assert page1["next"] == poisoned.id
    page2 = await h.call("dlq.list", limit=2, before=page1["next"])
    assert ([f["id"] for f in page2["firings"]], page2["next"]) == ([older.id], None)

    only = await h.call("dlq.list", schedule="poison")
    assert [f["id"] for f in only["firings"]] == [poisoned.id]
    assert (await h.call("dlq.list", schedule="nothing-here"))["firings"] == []


async def test_show_gives_the_task_tenant_and_every_attempt_with_its_output(h: Harness) -> None:
    poisoned = await h.quarantined(at=h.clock.wall_ms())

    shown = await h.call("dlq.show", id=poisoned.id)
    assert (shown["key"], shown["state"], shown["crashes"]) == (poisoned.key, "quarantined", 2)
    assert shown["task"]["command"] == ["sh", "-c", "echo dying; kill -9 $$"]
    assert shown["tenant"] == "acme"
    attempts = [
        (a["attempt"], a["state"], a["exit_code"], a["signal"], a["reason"], a["output"])
        for a in shown["attempts"]
    ]
    assert attempts == [
        (1, "crash", None, 9, "killed by SIGKILL", "attempt 1 dying\n"),
        (2, "crash", None, 9, "killed by SIGKILL", "attempt 2 dying\n"),
    ]
    assert await h.call("dlq.show", key=poisoned.key) == shown


async def test_retry_requeues_with_the_next_attempt_and_the_same_key(h: Harness) -> None:
    poisoned = await h.quarantined(at=h.clock.wall_ms())
    h.clock.advance(HOUR)

    requeued = await h.call("dlq.retry", key=poisoned.key)
    assert (requeued["id"], requeued["key"]) == (poisoned.id, poisoned.key)
    assert (requeued["state"], requeued["attempt"]) == ("committed", 3)
    assert requeued["updated_at"] == format_instant(h.clock.wall_ms())
    [ticket] = h.runner.submitted
    assert (ticket.firing_id, ticket.attempt) == (poisoned.id, 3)
    assert ticket.crashes == 2, "the crash count is kept, so one more crash re-quarantines"
    assert (await h.call("dlq.list"))["firings"] == []


async def test_retry_wakes_a_waiter_on_the_firing(h: Harness) -> None:
    dead = await h.dead(at=h.clock.wall_ms())
    h.clock.unsettle()
    waiter = asyncio.create_task(
        h.call("wait", key=dead.key, states=["committed"], timeout_ms=HOUR)
    )
    await h.clock.settled()  # the waiter found the firing dead and went to sleep

    await h.call("dlq.retry", id=dead.id)
    async with asyncio.timeout(10):  # the fake clock never reaches the wait's deadline
        result = await waiter
    assert result["done"]
    assert (result["firing"]["state"], result["firing"]["attempt"]) == ("committed", 2)


@pytest.mark.parametrize("op", ["dlq.show", "dlq.retry", "dlq.purge"])
async def test_a_firing_outside_the_dlq_is_a_conflict_and_is_left_alone(
    h: Harness, op: str
) -> None:
    done = await h.succeeded()

    with pytest.raises(Conflict, match=r"is succeeded, not in the dead-letter queue") as err:
        await h.call(op, id=done.id)
    assert repr(done.key) in str(err.value)
    assert await h.store.get_firing_by_id(done.id) == done
    assert h.runner.submitted == []


@pytest.mark.parametrize("op", ["dlq.show", "dlq.retry", "dlq.purge"])
async def test_an_unknown_id_or_key_is_not_found(h: Harness, op: str) -> None:
    with pytest.raises(NotFound, match="firing id 999 does not exist"):
        await h.call(op, id=999)
    with pytest.raises(NotFound, match=r"'poison@2030-01-01T00:00:00\.000Z'"):
        await h.call(op, key="poison@2030-01-01T00:00:00.000Z")


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("dlq.list", {"limit": 0}, "limit: expected an integer from 1 to 1000"),
        ("dlq.list", {"limit": 1001}, "limit: expected an integer from 1 to 1000"),
        ("dlq.list", {"before": "7"}, "before: expected an integer"),
        ("dlq.list", {"schedule": ""}, "schedule: expected a non-empty string"),
        ("dlq.list", {"state": "dead"}, "unknown argument 'state'"),
        ("dlq.show", {}, "give exactly one of id or key"),
        ("dlq.show", {"id": 1, "key": "poison@x"}, "give exactly one of id or key"),
        ("dlq.show", {"id": True}, "id: expected an integer"),
        ("dlq.retry", {"id": 0}, "id: expected an integer from 1"),
        ("dlq.retry", {"key": 5}, "key: expected a non-empty string"),
        ("dlq.purge", {}, "give exactly one of id, key or all"),
        ("dlq.purge", {"all": False}, "all: expected true, got False"),
        ("dlq.purge", {"all": "yes"}, "all: expected true"),
        ("dlq.purge", {"all": True, "id": 1}, "give exactly one of id, key or all"),
        ("dlq.purge", {"id": 1, "key": "poison@x"}, "give exactly one of id, key or all"),
        ("dlq.purge", {"id": 1, "older_than_ms": 1000}, "older_than_ms: only allowed with all"),
        ("dlq.purge", {"all": True, "older_than_ms": 0}, "older_than_ms: expected an integer"),
        ("dlq.purge", {"all": True, "older_than": 10}, "did you mean 'older_than_ms'"),
    ],
)
async def test_bad_arguments_are_refused_by_name(
    h: Harness, op: str, args: dict[str, Any], message: str
) -> None:
    dead = await h.dead(at=h.clock.wall_ms())
    with pytest.raises(InvalidArgument, match=message):
        await h.call(op, **args)
    assert await h.store.get_firing_by_id(dead.id) == dead, "nothing changed"


async def test_purge_by_id_deletes_the_firing_and_its_runs_only(h: Harness) -> None:
    now = h.clock.wall_ms()
    poisoned = await h.quarantined(at=now)
    dead = await h.dead(at=now)

    assert await h.call("dlq.purge", key=poisoned.key) == {"purged": 1}
    with pytest.raises(NotFound):
        await h.store.get_firing_by_id(poisoned.id)
    assert await h.store.runs_of(poisoned.id) == []
    assert [f["id"] for f in (await h.call("dlq.list"))["firings"]] == [dead.id]
    with pytest.raises(NotFound):
        await h.call("dlq.purge", id=poisoned.id)


async def test_purge_all_older_than_keeps_newer_entries_and_other_states(h: Harness) -> None:
    start = h.clock.wall_ms()
    old = await h.dead(at=start)
    h.clock.advance(2 * DAY)
    recent = await h.quarantined(at=h.clock.wall_ms())
    done = await h.succeeded()
    h.clock.advance(HOUR)

    assert await h.call("dlq.purge", all=True, older_than_ms=DAY) == {"purged": 1}
    assert [f["id"] for f in (await h.call("dlq.list"))["firings"]] == [recent.id]
    with pytest.raises(NotFound):
        await h.store.get_firing_by_id(old.id)

    assert await h.call("dlq.purge", all=True) == {"purged": 1}
    assert (await h.call("dlq.list"))["firings"] == []
    assert await h.store.get_firing_by_id(done.id) == done
    assert await h.call("dlq.purge", all=True) == {"purged": 0}


async def test_status_reports_dlq_size_and_the_oldest_entrys_age(h: Harness) -> None:
    empty = (await h.call("status"))["dlq"]
    assert empty == {"size": 0, "oldest_at": None, "oldest_age_ms": None}

    start = h.clock.wall_ms()
    await h.dead(at=start)
    h.clock.advance(HOUR)
    await h.quarantined(at=h.clock.wall_ms())
    await h.succeeded()
    h.clock.advance(90_000)

    block = (await h.call("status"))["dlq"]
    assert block == {
        "size": 2,
        "oldest_at": format_instant(start + 5),
        "oldest_age_ms": HOUR + 90_000 - 5,
    }
