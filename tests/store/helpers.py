"""Builders the store tests share: schedules, planners, and firings in a given state."""

from __future__ import annotations

from schedd.model import CommandTask, FiringState, IntervalSpec, ScheduleSpec
from schedd.store.contract import Planner
from schedd.store.records import NewFiring, RunFinish, SchedulePlan, ScheduleRule, Ticket
from schedd.store.sqlite import SqliteStore

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def spec(
    name: str = "job", every_ms: int = 10_000, argv: tuple[str, ...] = ("true",)
) -> ScheduleSpec:
    return ScheduleSpec(name=name, trigger=IntervalSpec(every_ms), task=CommandTask(argv))


def at_now(spec: ScheduleSpec, fired_through: int | None) -> tuple[int | None, int | None]:
    return T0, T0


async def add(store: SqliteStore, *specs: ScheduleSpec) -> None:
    await store.reconcile(list(specs), initial=at_now, now_ms=T0)


def fire_at(occ: int, hw: int | None = None) -> Planner:
    """A planner firing ``occ`` and moving the high-water mark to ``hw`` (default ``occ``)."""

    def planner(rule: ScheduleRule) -> SchedulePlan:
        f = NewFiring(
            key=f"{rule.name}@{occ}",
            schedule_id=rule.id,
            schedule=rule.name,
            scheduled_for_ms=occ,
            due_ms=occ,
            state=FiringState.COMMITTED,
            payload_id=rule.payload_id,
            lane="default",
        )
        return SchedulePlan((f,), hw if hw is not None else occ, occ + 10_000, occ + 10_000)

    return planner


async def ids(store: SqliteStore) -> list[int]:
    return [row[1] for row in await store.due_schedules(after=None, until_ms=2**62, limit=100)]


async def run_once(
    store: SqliteStore,
    t: Ticket,
    state: FiringState,
    *,
    at: int,
    crashed: bool = False,
    retry_at: int | None = None,
    reason: str = "exit status 1",
) -> int:
    run_id = await store.start_run(t, None, at)
    await store.finish_run(
        run_id,
        RunFinish(
            t.firing_id,
            "crash" if crashed else "failed",
            state,
            at + 1,
            None if crashed else 1,
            9 if crashed else None,
            reason,
            b"out",
            3,
            False,
            crashed=crashed,
            retry_at_ms=retry_at,
        ),
    )
    return run_id


async def committed(
    store: SqliteStore, name: str = "a", argv: tuple[str, ...] = ("true",)
) -> Ticket:
    await add(store, spec(name, argv=argv))
    sid = (await store.get_schedule(name)).id
    [t] = await store.dispatch([sid], fire_at(T0))
    return t
