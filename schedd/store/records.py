"""The rows the store hands out and takes in: plain, immutable data.

They are the vocabulary of the store contract (``contract.py``), shared by every implementation,
so a PostgreSQL store returns exactly the same shapes as the SQLite one.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from schedd.model import FiringState, ScheduleSpec
from schedd.record import record

#: The attempt number a new firing is stored with.
FIRST_ATTEMPT = 1


@record
class ScheduleRule:
    """What the dispatcher reads inside its write transaction: rule and marks, never the payload."""

    id: int
    name: str
    rule: dict[str, Any]
    paused: bool
    fired_through_ms: int | None
    next_fire_ms: int | None
    next_due_ms: int | None
    payload_id: int
    #: The stored JSON text ``rule`` was decoded from, when known: a key under which the planner
    #: compiles each distinct rule once (the schedules of a pulse usually share a handful).
    rule_json: str | None = field(default=None, kw_only=True)


@record
class ScheduleRecord:
    id: int
    spec: ScheduleSpec
    paused: bool
    fired_through_ms: int | None
    next_fire_ms: int | None
    next_due_ms: int | None
    created_ms: int
    updated_ms: int
    last_state: str | None
    last_finished_ms: int | None
    #: The stored task payload, which firings made from this schedule outside dispatch (an
    #: operator's trigger or backfill) point at.
    payload_id: int

    @classmethod
    def inserted(
        cls,
        schedule_id: int,
        spec: ScheduleSpec,
        paused: bool,
        next_fire_ms: int | None,
        next_due_ms: int | None,
        now_ms: int,
        payload_id: int,
    ) -> ScheduleRecord:
        """A schedule just inserted: what reading its row back would give, without the read
        (never fired, created and updated now). Arguments by position: ``add_many`` builds a
        thousand of these per request, and keywords cost half as much again."""
        return cls(
            schedule_id,
            spec,
            paused,
            None,  # fired_through_ms
            next_fire_ms,
            next_due_ms,
            now_ms,  # created_ms
            now_ms,  # updated_ms
            None,  # last_state
            None,  # last_finished_ms
            payload_id,
        )


@record
class NewFiring:
    key: str
    schedule_id: int | None
    schedule: str
    scheduled_for_ms: int
    due_ms: int
    state: FiringState
    payload_id: int
    lane: str
    reason: str | None = None
    #: Stored as ``created_ms``/``updated_ms``; ``None`` means ``due_ms``, right for a dispatched
    #: occurrence (created when due) but not for work submitted now to start later.
    created_ms: int | None = None
    #: Made for an occurrence that missed its grace: the catch-up drain releases it.
    catchup: bool = False

    @property
    def stored_created_ms(self) -> int:
        return self.due_ms if self.created_ms is None else self.created_ms

    def ticket(self, firing_id: int) -> Ticket:
        """The ticket of this firing once inserted as ``firing_id``: what reading the new row
        back would give (first attempt, no crashes), without the read."""
        return Ticket(
            firing_id,
            self.key,
            self.schedule_id,
            self.schedule,
            self.scheduled_for_ms,
            FIRST_ATTEMPT,
            self.payload_id,
            0,
            self.lane,
            ready_ms=max(self.due_ms, self.stored_created_ms),
            catchup=self.catchup,
        )


@record
class SchedulePlan:
    """The planner's verdict for one due schedule, applied atomically with its firings.

    ``fired_through_ms`` is the new high-water mark: no occurrence at or before it is produced
    again, so it only ever moves forward (the store refuses to move it back).
    """

    firings: tuple[NewFiring, ...]
    fired_through_ms: int | None
    next_fire_ms: int | None
    next_due_ms: int | None


@record
class Ticket:
    """A committed firing on its way to a worker: ids and times, no payload (DESIGN §4)."""

    firing_id: int
    key: str
    schedule_id: int | None
    schedule: str
    scheduled_for_ms: int
    attempt: int
    payload_id: int
    #: Crashes of earlier attempts (stored with the firing, so they survive restarts).
    crashes: int = 0
    #: The lane whose slots run it (DESIGN §5).
    lane: str = "default"
    #: Since when it may start: its due time, or when it was stored if later (a backfilled or
    #: triggered occurrence is not late for its old instant). The runner measures the wait
    #: in its queue from here against the misfire grace.
    ready_ms: int = field(kw_only=True)
    #: Backlog of an outage: released by the catch-up drain, never queued ahead of fresh work.
    catchup: bool = field(default=False, kw_only=True)


@record
class FiringRecord:
    id: int
    key: str
    schedule_id: int | None
    schedule: str
    scheduled_for_ms: int
    due_ms: int
    state: FiringState
    attempt: int
    crashes: int
    payload_id: int
    lane: str
    reason: str | None
    created_ms: int
    updated_ms: int
    retry_at_ms: int | None = None
    catchup: bool = False

    def ticket(self) -> Ticket:
        return Ticket(
            self.id,
            self.key,
            self.schedule_id,
            self.schedule,
            self.scheduled_for_ms,
            self.attempt,
            self.payload_id,
            self.crashes,
            self.lane,
            ready_ms=max(self.due_ms, self.created_ms),
            catchup=self.catchup,
        )


@record
class RetryBatch:
    """What :meth:`Store.start_retries` did: the firings now committed, and those not due yet."""

    tickets: tuple[Ticket, ...]
    #: ``(retry_at_ms, firing_id)`` of retries whose time the wall clock has not reached.
    not_due: tuple[tuple[int, int], ...]


@record
class ProcessRef:
    """Who a running run is, recorded so recovery can kill its leftovers (pid reuse-safe)."""

    pid: int
    pgid: int
    start_ticks: int


@record
class RunRecord:
    id: int
    firing_id: int
    key: str
    schedule: str
    attempt: int
    state: str
    process: ProcessRef | None
    started_ms: int
    ended_ms: int | None
    exit_code: int | None
    signal: int | None
    reason: str | None
    output: bytes | None
    output_bytes: int
    output_truncated: bool


@record
class RunFinish:
    """A run's end, written together with its firing's next state in one transaction (with
    the run's start too, when the end is known before the start is written)."""

    firing_id: int
    outcome: str
    firing_state: FiringState
    ended_ms: int
    exit_code: int | None
    signal: int | None
    reason: str | None
    output: bytes
    output_bytes: int
    output_truncated: bool
    crashed: bool = False
    #: When ``firing_state`` is ``failed``: the wall-clock ms its next attempt is due.
    retry_at_ms: int | None = None
    #: The firing's reason, when it differs from the run's (e.g. "quarantined after 2 crashes").
    firing_reason: str | None = None


def not_ended() -> RunFinish | None:
    """A run's end as :meth:`~schedd.store.contract.Store.start_run` asks for it, when the
    caller writes the end apart."""
    return None


@record
class RecoveredRun:
    """An in-flight run found at start-up, so its surviving process group can be killed."""

    run_id: int
    key: str
    process: ProcessRef | None


@record
class ReconcileSummary:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int


@record
class StoreInfo:
    path: str
    size_bytes: int
    wal_bytes: int
    schema_version: int
    synchronous: str
    sqlite_version: str


@record
class FiringRef:
    id: int
    key: str
    schedule_id: int | None = None
    #: The state it was in before the change (a removed ``committed`` one was counted as active
    #: by the runner, whether it held it in memory or left it in the store).
    was: FiringState | None = None


@record
class Removal:
    """What :meth:`Store.remove_firings` found and did, so the caller can loop until done."""

    #: Matching firings before this call (removed ones included).
    matched: int
    removed: tuple[FiringRef, ...]
    #: Up to 20 keys: the removed firings, or on a dry run the first matching ones.
    sample: tuple[str, ...]


@record
class BacklogGroup:
    schedule: str
    lane: str
    state: FiringState
    count: int
    oldest_due_ms: int
    payload_bytes: int


@record
class BacklogItem:
    id: int
    key: str
    schedule: str
    state: FiringState
    due_ms: int
    payload_bytes: int


@record
class Backlog:
    """The unfinished firings: where they pile up, and which carry the most bytes."""

    groups: tuple[BacklogGroup, ...]
    largest: tuple[BacklogItem, ...]
    count: int
    payload_bytes: int


@record
class LaneDepth:
    lane: str
    ready: int
    running: int
    oldest_ready_due_ms: int | None
    #: Of ``ready``, the catch-up firings (what the drain has still to release).
    catchup: int = 0

    def lag_ms(self, now_ms: int) -> int | None:
        """How long the oldest ready firing has been due (never negative after a clock step)."""
        due = self.oldest_ready_due_ms
        return None if due is None else max(0, now_ms - due)


@record
class Expectation:
    """A schedule that must succeed at least every ``window_ms`` (``expect_success_within``)."""

    schedule: str
    window_ms: int
    on_overdue: tuple[str, ...] | None
    created_ms: int


@record
class ReadySpan:
    """The committed firings of one lane and kind (fresh or catch-up) found at start-up: the
    runner reads them back in id order, as many at a time as it has room for."""

    lane: str
    catchup: bool
    first_id: int
    last_id: int
    count: int
