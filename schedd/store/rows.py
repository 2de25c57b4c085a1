"""Rows in, records out: the SQL column lists and decoders the SQLite store modules share.

Kept apart so every mixin of the store (schedules, intake, firings, backlog) reads rows through
one decoder each, and a column added by a migration is added in one place. The checked state
transition lives here too, so every state change in every mixin obeys one lifecycle table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from schedd.errors import IllegalTransition, NotFound
from schedd.model import (
    FINAL_STATES,
    FiringState,
    PythonTask,
    ScheduleSpec,
    Source,
    can_transition,
    policies_from_json,
    schedule_rule_to_json,
    trigger_from_json,
)
from schedd.payload import decode_payload, encode_payload, payload_digest
from schedd.record import record
from schedd.store.records import FiringRecord, ProcessRef, RunRecord, ScheduleRecord
from schedd.store.writer import Conn

#: SQLite's default limit on bound parameters is 32766 on 3.32+; stay far below it.
CHUNK = 500

FIRING_COLS = (
    "id, key, schedule_id, schedule, scheduled_for_ms, due_ms, state, attempt, crashes,"
    " payload_id, lane, reason, created_ms, updated_ms, retry_at_ms, catchup"
)
RUN_COLS = (
    "r.id, r.firing_id, f.key, r.schedule, r.attempt, r.state, r.pid, r.pgid, r.proc_start,"
    " r.started_ms, r.ended_ms, r.exit_code, r.signal, r.reason"
)
_FINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(FINAL_STATES))
#: The unfinished states but ``committed``, spelled exactly as the partial index ``firings_open``
#: is (SQLite uses a partial index only when the query repeats its WHERE term). Committed
#: firings are in ``firings_ready`` (``READY_SQL``); a read of every unfinished firing reads both.
OPEN_STATES = (FiringState.SCHEDULED, FiringState.RUNNING, FiringState.FAILED)
OPEN_SQL = "state IN ({})".format(", ".join(f"'{s.value}'" for s in OPEN_STATES))
READY_SQL = "state = 'committed'"
#: The dead-letter states (``schedctl dlq``), spelled as the partial index ``firings_dead`` is.
DLQ_STATES = (FiringState.DEAD, FiringState.QUARANTINED)
DLQ_SQL = "state IN ({})".format(", ".join(f"'{s.value}'" for s in DLQ_STATES))


def state_sql(states: Iterable[FiringState]) -> str:
    """``state IN (...)`` as literals, prefixed with the WHERE term of the partial index that
    covers them (``firings_open``, ``firings_ready`` or ``firings_dead``), so SQLite can use
    that index; states no one index covers are scanned for."""
    wanted = set(states)
    listed = "state IN ({})".format(", ".join(f"'{s.value}'" for s in FiringState if s in wanted))
    covers = ((OPEN_STATES, OPEN_SQL), ((FiringState.COMMITTED,), READY_SQL), (DLQ_STATES, DLQ_SQL))
    for covering, term in covers:
        if wanted <= set(covering):
            return f"{term} AND {listed}"
    return listed


SCHEDULE_SELECT = f"""
    SELECT s.id, s.name, s.source, s.rule, p.body, s.paused, s.fired_through_ms,
           s.next_fire_ms, s.next_due_ms, s.created_ms, s.updated_ms,
           (SELECT f.state || ' ' || f.updated_ms FROM firings f
             WHERE f.schedule = s.name AND f.state IN ({_FINAL_SQL})
             ORDER BY f.id DESC LIMIT 1),
           s.payload_id
      FROM schedules s JOIN payloads p ON p.id = s.payload_id
"""


def chunks(seq: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def marks(n: int) -> str:
    return ",".join("?" * n)


def firing_row(row: sqlite3.Row | tuple[Any, ...]) -> FiringRecord:
    return FiringRecord(
        id=row[0],
        key=row[1],
        schedule_id=row[2],
        schedule=row[3],
        scheduled_for_ms=row[4],
        due_ms=row[5],
        state=FiringState(row[6]),
        attempt=row[7],
        crashes=row[8],
        payload_id=row[9],
        lane=row[10],
        reason=row[11],
        created_ms=row[12],
        updated_ms=row[13],
        retry_at_ms=row[14],
        catchup=bool(row[15]),
    )


def run_row(row: sqlite3.Row | tuple[Any, ...], output: bytes | None = None) -> RunRecord:
    process = None if row[6] is None else ProcessRef(row[6], row[7], row[8])
    return RunRecord(
        id=row[0],
        firing_id=row[1],
        key=row[2],
        schedule=row[3],
        attempt=row[4],
        state=row[5],
        process=process,
        started_ms=row[9],
        ended_ms=row[10],
        exit_code=row[11],
        signal=row[12],
        reason=row[13],
        output=output,
        output_bytes=row[14],
        output_truncated=bool(row[15]),
    )


def schedule_row(row: sqlite3.Row | tuple[Any, ...]) -> ScheduleRecord:
    rule = json.loads(row[3])
    payload = decode_payload(row[4])
    spec = ScheduleSpec(
        name=row[1],
        trigger=trigger_from_json(rule["trigger"]),
        task=payload.task,
        policies=policies_from_json(rule["policies"]),
        jitter_ms=rule["jitter_ms"],
        lane=rule["lane"],
        tenant=rule["tenant"],
        source=Source(row[2]),
    )
    last_state = last_ms = None
    if row[11] is not None:
        state, ms = str(row[11]).split(" ")
        last_state, last_ms = state, int(ms)
    return ScheduleRecord(
        id=row[0],
        spec=spec,
        paused=bool(row[5]),
        fired_through_ms=row[6],
        next_fire_ms=row[7],
        next_due_ms=row[8],
        created_ms=row[9],
        updated_ms=row[10],
        last_state=last_state,
        last_finished_ms=last_ms,
        payload_id=row[12],
    )


@record
class SpecText:
    """A schedule definition as the ``schedules`` row stores it, encoded once."""

    #: The rule JSON: the small part the dispatcher reads.
    rule: str
    #: The task payload (stored content-addressed in ``payloads``).
    body: str
    #: What makes two definitions the same, for reconcile's "changed" test.
    digest: str
    task_kind: str


def spec_text(spec: ScheduleSpec) -> SpecText:
    rule = json.dumps(schedule_rule_to_json(spec), sort_keys=True)
    body = encode_payload(spec.task, spec.policies, spec.tenant)
    kind = "python" if isinstance(spec.task, PythonTask) else "command"
    return SpecText(rule, body, payload_digest(rule + "\n" + body), kind)


@lru_cache(maxsize=4096)
def rule_dict(text: str) -> dict[str, Any]:
    """A stored rule, decoded. Cached by its text, because the schedules of a pulse usually
    share a handful of rules; the dict is therefore shared and must be treated as read-only."""
    return dict(json.loads(text))


#: For each state, the states a firing may reach it from (``model.TRANSITIONS`` read backwards),
#: spelled as SQL, so a single change is checked by the UPDATE's own WHERE clause.
_FROM_SQL = {
    new: ", ".join(f"'{old.value}'" for old in FiringState if can_transition(old, new))
    for new in FiringState
}


def transition_sql(first: FiringState, set_sql: str = "") -> str:
    """:func:`transition`'s UPDATE for a move to ``first`` (or through it), binding the new
    state, reason, time, ``set_sql``'s values and the id; alone, for many firings at once."""
    return (
        f"UPDATE firings SET state = ?, reason = ?, updated_ms = ?{set_sql}"
        f" WHERE id = ? AND state IN ({_FROM_SQL[first] or 'NULL'})"
    )


async def transition(
    conn: Conn,
    firing_id: int,
    new: FiringState,
    *,
    now_ms: int,
    reason: str | None = None,
    set_sql: str = "",
    set_args: Sequence[Any] = (),
    via: FiringState | None = None,
) -> None:
    """Change one firing's state if the lifecycle table allows it; ``via``: as two changes,
    through that state, in one statement (a run written whole goes ``committed → succeeded``
    through ``running``).

    One statement, the hot path of every run: the UPDATE matches only when the current state is
    one ``new`` (or ``via``) may follow. Only when it matches nothing is the row read, to say
    why (no such firing, or which transition was refused)."""
    first = new if via is None else via
    assert via is None or can_transition(via, new), f"{via} -> {new}"
    changed = await conn.execute_fetchall(
        transition_sql(first, set_sql) + " RETURNING id",
        (new.value, reason, now_ms, *set_args, firing_id),
    )
    if not changed:
        rows = list(
            await conn.execute_fetchall("SELECT state, key FROM firings WHERE id = ?", (firing_id,))
        )
        if not rows:
            raise _missing(firing_id)
        raise _illegal(rows[0][1], FiringState(rows[0][0]), first)


def _missing(firing_id: int) -> NotFound:
    return NotFound(f"firing id {firing_id} does not exist")


def _illegal(key: str, old: FiringState, new: FiringState) -> IllegalTransition:
    return IllegalTransition(f"firing {key}: {old} -> {new} is not allowed")


async def transition_all(
    conn: Conn,
    firing_ids: Sequence[int],
    new: FiringState,
    *,
    now_ms: int,
    reason: str | None = None,
    set_sql: str = "",
    set_args: Sequence[Any] = (),
) -> dict[int, FiringState]:
    """:func:`transition` for many firings at once, returning their old states: every one is
    checked before any changes, so a refused one changes nothing, and the updates go by chunk
    rather than one round trip per firing (an operator may cancel ten thousand in one
    request)."""
    old: dict[int, FiringState] = {}
    for chunk in chunks(firing_ids):
        rows = await conn.execute_fetchall(
            f"SELECT id, state, key FROM firings WHERE id IN ({marks(len(chunk))})", chunk
        )
        for fid, state, key in rows:
            old[fid] = FiringState(state)
            if not can_transition(old[fid], new):
                raise _illegal(key, old[fid], new)
    for fid in firing_ids:
        if fid not in old:
            raise _missing(fid)
    for chunk in chunks(firing_ids):
        await conn.execute(
            f"UPDATE firings SET state = ?, reason = ?, updated_ms = ?{set_sql}"
            f" WHERE id IN ({marks(len(chunk))})",
            (new.value, reason, now_ms, *set_args, *chunk),
        )
    return old
