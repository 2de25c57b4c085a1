"""The store contract: everything the daemon asks of durable storage.

Its docstrings are the contract (STYLE.md convention 3); ``tests/store/test_contract.py`` checks
every point and is written to run unchanged against any implementation (SQLite today,
PostgreSQL for multi-host deployments later). Guarantees every implementation must give:

* **Write-ahead**: ``dispatch`` stores new firings (state ``committed``) and the schedule's new
  high-water mark in one transaction; a caller may start a firing only after it returns.
* **Idempotency**: a firing key exists at most once. Inserting an existing key keeps the
  existing firing, unchanged, and reports it.
* **Never early**: a firing that waits for a time (a ``failed`` one's retry, a ``scheduled``
  one submitted for later) stores that time as ``retry_at_ms`` and is started only by
  ``start_retries``, which re-checks the wall clock in its transaction.
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
from schedd.record import record
from schedd.store.records import (
    Backlog,
    Expectation,
    FiringRecord,
    LaneDepth,
    NewFiring,
    ProcessRef,
    ReadySpan,
    ReconcileSummary,
    RecoveredRun,
    Removal,
    RetryBatch,
    RunFinish,
    RunRecord,
    SchedulePlan,
    ScheduleRecord,
    ScheduleRule,
    StoreInfo,
    Ticket,
    not_ended,
)

#: Called inside the dispatch transaction for each due schedule; ``None`` leaves it untouched.
Planner = Callable[[ScheduleRule], SchedulePlan | None]


@record
class ScheduleToAdd:
    """One schedule for ``add_schedules``: its definition, its first marks, and its flag."""

    spec: ScheduleSpec
    next_fire_ms: int | None
    next_due_ms: int | None
    paused: bool = False


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

    async def expectations(self) -> list[Expectation]:
        """Every schedule with ``expect_success_within`` set, by name (read once at start-up;
        changes afterwards reach the overdue watch directly)."""

    async def due_schedules(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int, bool, str]]:
        """``(next_due_ms, schedule_id, is_python, lane)`` of unpaused schedules due by
        ``until_ms``, ascending, strictly after the ``after`` cursor (a previous page's first
        two fields). ``is_python`` says the schedule runs a Python task (the pool pre-scales
        for those); the lane says whether it is committed ahead of the rest of a pulse."""

    async def dispatch(self, schedule_ids: Sequence[int], planner: Planner) -> list[Ticket]:
        """Apply ``planner`` to each schedule and store its plan, all in one transaction.

        Returns the tickets of firings inserted as ``committed`` (not those the plan marked
        ``skipped``, nor keys that already existed). Idempotent per key.
        """

    async def add_schedule(
        self,
        spec: ScheduleSpec,
        *,
        next_fire_ms: int | None,
        next_due_ms: int | None,
        paused: bool,
        now_ms: int,
    ) -> ScheduleRecord:
        """Store a new schedule with ``spec.source`` (the admin API passes ``api``), its payload
        content-addressed exactly as ``reconcile`` stores one. A taken name, whatever its
        source, is a ``Conflict`` naming the name and where the existing schedule came from.
        Returns the schedule as ``get_schedule`` would (with a re-used name's history)."""

    async def add_schedules(
        self, schedules: Sequence[ScheduleToAdd], *, now_ms: int
    ) -> list[ScheduleRecord]:
        """``add_schedule`` for many, all or nothing, in one transaction.

        A name that is taken (whatever its source) is a ``Conflict`` naming it and where it
        came from, and a name given twice is ``InvalidArgument`` naming it; either way nothing
        is stored. Returns the records in input order as inserted: ``last_state`` and
        ``last_finished_ms`` are ``None`` (history a removed schedule of the same name left is
        not read back for thousands of names; ``get_schedule`` shows it)."""

    async def remove_schedule(self, name: str) -> ScheduleRecord:
        """Delete the schedule, whatever its source, and return it as it was; its firings and
        runs stay as history (as when ``reconcile`` removes one). ``NotFound`` naming it."""

    async def set_paused(self, name: str, paused: bool, now_ms: int) -> ScheduleRecord:
        """Pause or resume; return the schedule as now stored. Idempotent (``updated_ms``
        moves only on a change); the flag survives ``reconcile``. ``NotFound`` naming it."""

    async def insert_firings(self, firings: Sequence[NewFiring]) -> list[tuple[FiringRecord, bool]]:
        """Insert firings (trigger, backfill) in one transaction; ``(record, created)`` for each,
        in input order. A key already stored (or repeated in ``firings``) is not inserted again:
        its existing record is returned, unchanged, with ``created`` False. A ``scheduled``
        firing wakes at its ``due_ms`` (stored as ``retry_at_ms``); see ``start_retries``."""

    async def existing_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are stored (what a backfill's dry run would not create)."""

    async def submit(self, firing: NewFiring, body: str) -> tuple[FiringRecord, bool]:
        """Store an ad-hoc task's payload ``body`` (content-addressed) and its firing, which
        points at it whatever ``firing.payload_id`` says, in one transaction. An existing key
        returns the existing firing with ``False`` and stores nothing, not even the payload."""

    # --- payloads -------------------------------------------------------------------------

    async def load_payload(self, payload_id: int) -> str:
        """The task payload (JSON text); read only when a run starts."""

    # --- firings and runs -----------------------------------------------------------------

    async def get_firing(self, key: str) -> FiringRecord:
        """Raises ``NotFound`` naming the key."""

    async def room_for_run(self) -> None:
        """Return when a run may start: a run's rows are stored behind it, and runs wait while
        too many of those are still queued (backpressure: the pool is not faster than its
        records)."""

    async def start_run(
        self,
        ticket: Ticket,
        process: ProcessRef | None,
        now_ms: int,
        ended: Callable[[], RunFinish | None] = not_ended,
    ) -> int:
        """Move the firing ``committed → running`` and insert its run row; return the run id.

        ``ended`` is asked as the row is written. A run whose end is known by then (a short
        task whose start was still queued behind others) is written whole: its row with its
        end, its firing moved straight to the end's state (as through ``running``). Two
        statements instead of four, one write instead of two: most no-op Python runs end
        before their start is written."""

    async def finish_run(self, run_id: int, finish: RunFinish) -> None:
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

    async def ready_page(
        self, *, lane: str, catchup: bool, first_id: int, last_id: int, limit: int
    ) -> list[FiringRecord]:
        """Up to ``limit`` ``committed`` firings of ``lane`` and kind with ids in
        ``[first_id, last_id]``, in id order, read in the total order of commits (a firing
        that was committed when an earlier write of the caller returned is seen as such)."""

    async def ready_spans(self) -> list[ReadySpan]:
        """Per lane and kind, the id range and count of ``committed`` firings (start-up)."""

    async def committed_by_schedule(self) -> dict[int, int]:
        """``committed`` firings per schedule id."""

    async def list_runs(
        self,
        *,
        schedule: str | None,
        limit: int,
        before_id: int | None = None,
        states: Sequence[str] | None = None,
        since_ms: int | None = None,
        key: str | None = None,
    ) -> list[RunRecord]:
        """Newest first, without output (``get_run`` has it). The filters are ANDed: run states,
        runs started at or after ``since_ms``, runs of the firing ``key``."""

    async def get_run(self, run_id: int) -> RunRecord:
        """Raises ``NotFound`` naming the run id."""

    async def last_successes(self) -> dict[str, int]:
        """Per schedule name, the latest ``ended_ms`` of its ``succeeded`` runs; names with no
        succeeded run are absent. Removed schedules keep their history, so their names appear
        too. The latest *end*, not the latest start: with ``overlap = "allow"`` an earlier run
        may finish last, and that finish is the freshest evidence the schedule works. Read once
        at start-up (and on reload) to seed ``expect_success_within``; the daemon follows
        successes as they happen afterwards, so this may cost a pass over the runs."""

    async def count_firings(self, states: Sequence[FiringState]) -> int: ...

    # --- retries --------------------------------------------------------------------------

    async def due_retries(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int]]:
        """``(retry_at_ms, firing_id)`` of firings waiting for a time (``failed`` ones' retries,
        ``scheduled`` ones' start) due by ``until_ms``, ascending, strictly after the ``after``
        cursor."""

    async def start_retries(self, firing_ids: Sequence[int], now_ms: int) -> RetryBatch:
        """Move each waiting firing whose ``retry_at_ms <= now_ms`` to ``committed``, in one
        transaction: a ``failed`` one with attempt + 1, a ``scheduled`` one keeping its attempt
        (it never ran). Report the others as not due (never early). Ids no longer waiting
        (purged, removed, retried meanwhile) are ignored."""

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

    # --- operators' view of the unfinished work ---------------------------------------------

    async def backlog(self, *, schedule: str | None, top: int) -> Backlog:
        """Unfinished firings (``scheduled``, ``committed``, ``running``, ``failed``), of one
        schedule or all: counted per (schedule, lane, state), most first (ties by schedule,
        lane, state), and the ``top`` carrying the largest payloads (ties by id). Payload
        bytes count a shared payload once per firing: it is what the backlog would carry."""

    async def lanes(self) -> list[LaneDepth]:
        """Per lane (by name) with ``committed`` or ``running`` firings: how many of each, and
        the earliest due time among the committed ones (how late the lane runs)."""

    async def remove_firings(
        self,
        *,
        schedule: str,
        match: str | None,
        states: Sequence[FiringState],
        limit: int,
        dry_run: bool,
        now_ms: int,
    ) -> Removal:
        """Cancel firings of ``schedule`` in ``states`` whose key or payload text contains
        ``match`` (case-sensitive; ``None`` matches all), counted and changed in one
        transaction. Up to ``limit`` (lowest id first) go to ``cancelled`` with reason
        "removed by an operator" and no wake time; their rows and runs stay. A dry run changes
        nothing. ``InvalidArgument`` if ``states`` holds anything but ``scheduled``,
        ``committed`` or ``failed`` (a running firing is never removed) or ``limit`` < 1."""
