"""The store contract: everything the daemon asks of durable storage.

Its docstrings are the contract (STYLE.md convention 3); ``tests/store/test_contract.py`` checks
every point and is written to run unchanged against any implementation (SQLite today,
PostgreSQL for multi-host deployments later). Guarantees every implementation must give:

* **Write-ahead**: ``dispatch`` stores new firings (state ``committed``) and the schedule's new
  high-water mark in one transaction; a caller may start a firing only after it returns.
* **Idempotency**: a firing key exists at most once. Inserting an existing key keeps the
  existing firing and reports it.
* **High-water**: a schedule's ``fired_through_ms`` never moves back.
* **Legal transitions only**: a firing state change outside ``model.TRANSITIONS`` raises
  ``IllegalTransition`` and changes nothing.
* **Durability**: a method that returned has committed; a crash afterwards loses nothing.
* **Short reads**: listing methods are paginated (``limit`` + ``before_id`` cursors) and each page
  is its own short read, so admin reads never pin the WAL or wait behind a large commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from schedd.model import FiringState, ScheduleSpec
from schedd.store.records import (
    FiringRecord,
    NewFiring,
    ProcessRef,
    ReconcileSummary,
    RecoveredRun,
    RetryBatch,
    RunFinish,
    RunRecord,
    SchedulePlan,
    ScheduleRecord,
    ScheduleRule,
    StoreInfo,
    Ticket,
)

#: Called inside the dispatch transaction for each due schedule; ``None`` leaves it untouched.
Planner = Callable[[ScheduleRule], SchedulePlan | None]


class Store(Protocol):
    async def open(self) -> None:
        """Create or migrate the schema; refuse a store written by a newer schema version."""

    async def close(self) -> None:
        """Finish pending writes, checkpoint, release connections."""

    async def info(self) -> StoreInfo: ...

    # --- schedules ------------------------------------------------------------------------

    async def reconcile(
        self,
        specs: Sequence[ScheduleSpec],
        *,
        initial: Callable[[ScheduleSpec, int | None], tuple[int | None, int | None]],
        now_ms: int,
    ) -> ReconcileSummary:
        """Make the stored ``config``-sourced schedules equal ``specs``.

        New names are added, changed specs replaced (keeping the high-water mark, so a changed
        schedule never re-fires what already fired), and config schedules absent from ``specs``
        removed; their firings and runs stay as history. ``api`` schedules are left alone, and a
        config schedule whose name an ``api`` one already holds is a ``Conflict``.
        ``initial(spec, fired_through_ms)`` gives ``(next_fire_ms, next_due_ms)`` for an added or
        changed schedule, respecting its high-water mark.
        """

    async def get_schedule(self, name: str) -> ScheduleRecord:
        """Raises ``NotFound`` naming the schedule."""

    async def list_schedules(
        self, *, limit: int, after_name: str | None = None
    ) -> list[ScheduleRecord]: ...

    async def count_schedules(self) -> int: ...

    async def due_schedules(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int, bool]]:
        """``(next_due_ms, schedule_id, is_python)`` of unpaused schedules due by ``until_ms``,
        ascending, strictly after the ``after`` cursor (a previous page's first two fields).
        ``is_python`` says the schedule runs a Python task (the pool pre-scales for those)."""

    async def dispatch(self, schedule_ids: Sequence[int], planner: Planner) -> list[Ticket]:
        """Apply ``planner`` to each schedule and store its plan, all in one transaction.

        Returns the tickets of firings inserted as ``committed`` (not those the plan marked
        ``skipped``, nor keys that already existed). Idempotent per key.
        """

    async def insert_firing(self, firing: NewFiring) -> tuple[FiringRecord, bool]:
        """Insert one firing (ad-hoc work); ``(existing, False)`` when its key already exists."""

    # --- payloads -------------------------------------------------------------------------

    async def load_payload(self, payload_id: int) -> str:
        """The task payload (JSON text); read only when a run starts."""

    # --- firings and runs -----------------------------------------------------------------

    async def get_firing(self, key: str) -> FiringRecord:
        """Raises ``NotFound`` naming the key."""

    async def start_run(self, ticket: Ticket, process: ProcessRef | None, now_ms: int) -> int:
        """Move the firing ``committed → running`` and insert its run row; return the run id."""

    async def finish_run(self, finish: RunFinish) -> None:
        """Store a run's end and its firing's next state atomically: the firing's crash count
        grows by one if the run crashed, and ``retry_at_ms`` is stored with a ``failed`` state."""

    async def set_firing_state(
        self, firing_id: int, state: FiringState, *, reason: str | None, now_ms: int
    ) -> None:
        """A bare transition (skip, cancel); ``IllegalTransition`` if the table forbids it."""

    async def recover(self, now_ms: int) -> list[RecoveredRun]:
        """After a crash: close runs left ``running`` as ``lost``, and move every unfinished
        firing (``committed`` or ``running``) to ``committed`` with attempt + 1.
        Returns the lost runs so the caller can kill their surviving process groups."""

    async def unfinished(self, *, after_id: int, limit: int) -> list[FiringRecord]:
        """``committed`` firings in id order (the queue to resume after ``recover``)."""

    async def list_runs(
        self, *, schedule: str | None, limit: int, before_id: int | None = None
    ) -> list[RunRecord]:
        """Newest first, without output (``get_run`` has it)."""

    async def get_run(self, run_id: int) -> RunRecord:
        """Raises ``NotFound`` naming the run id."""

    async def count_firings(self, states: Sequence[FiringState]) -> int: ...

    # --- retries --------------------------------------------------------------------------

    async def due_retries(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int]]:
        """``(retry_at_ms, firing_id)`` of ``failed`` firings whose retry is due by
        ``until_ms``, ascending, strictly after the ``after`` cursor."""

    async def start_retries(self, firing_ids: Sequence[int], now_ms: int) -> RetryBatch:
        """Move each ``failed`` firing whose ``retry_at_ms <= now_ms`` to ``committed`` with
        attempt + 1, in one transaction; report the others as not due (never early). Ids no
        longer ``failed`` (purged, retried meanwhile) are ignored."""

    # --- the dead-letter queue (dead or quarantined firings) -------------------------------

    async def list_dead(
        self, *, schedule: str | None, limit: int, before_id: int | None = None
    ) -> list[FiringRecord]:
        """Newest first by firing id."""

    async def oldest_dead_ms(self) -> int | None:
        """When the oldest dead-letter firing got there (``None`` if the queue is empty)."""

    async def get_firing_by_id(self, firing_id: int) -> FiringRecord:
        """Raises ``NotFound`` naming the id."""

    async def runs_of(self, firing_id: int) -> list[RunRecord]:
        """Every attempt of a firing, oldest first, with output."""

    async def requeue(self, firing_id: int, now_ms: int) -> Ticket:
        """An operator's retry: ``dead``/``quarantined`` → ``committed``, attempt + 1, same key.
        ``IllegalTransition`` for a firing in any other state."""

    async def purge_dead(
        self, *, firing_ids: Sequence[int] | None, older_than_ms: int | None
    ) -> int:
        """Delete dead-letter firings (those listed, and/or last changed before
        ``older_than_ms``), their runs, and payloads nothing references any more. Firings in
        other states are never deleted. Returns how many firings were deleted."""

    async def count_firings_of(self, schedule: str, states: Sequence[FiringState]) -> int: ...
