"""The firing side of the SQLite store: payload reads, runs, retries and the dead-letter queue.

A mixin of :class:`~schedd.store.sqlite.SqliteStore` (which supplies the group-committing
``_write`` and the read-only ``_read``), kept apart so each module holds one part of the
contract: this one what happens to firings once they exist. Every single state change goes
through :func:`~schedd.store.rows.transition`, so the lifecycle table is enforced here exactly
as for dispatch.

Wake-ups: a ``failed`` firing, and one submitted ``scheduled`` for later, carries
``retry_at_ms``; the loader pages due ones through a partial index (:meth:`due_retries`) and
:meth:`start_retries` moves them to ``committed`` (a failed one with attempt + 1; a scheduled
one keeps attempt 1, it never ran), *re-checking the wall clock inside the transaction* so
nothing starts before its time even if the monotonic estimate ran ahead.

The dead-letter queue is the firings in ``dead`` or ``quarantined``; they keep their payload,
runs and output until an operator retries (``requeue``) or purges them. Purging deletes their
runs and any payload no schedule or other firing still references.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from schedd.errors import IllegalTransition, InvalidArgument, NotFound
from schedd.model import FiringState
from schedd.smallcache import SmallCache
from schedd.store.base import StoreMixin
from schedd.store.records import (
    FiringRecord,
    ProcessRef,
    RecoveredRun,
    RetryBatch,
    RunFinish,
    RunRecord,
    Ticket,
    not_ended,
)
from schedd.store.rows import (
    DLQ_SQL,
    DLQ_STATES,
    FIRING_COLS,
    OPEN_SQL,
    READY_SQL,
    RUN_COLS,
    chunks,
    firing_row,
    marks,
    run_row,
    state_sql,
    transition,
)
from schedd.store.starts import RUN_FINISH, StartGroups, end_firing, run_end
from schedd.store.writer import Conn

#: The firings waiting for a time (``retry_at_ms``), as the partial index ``firings_wake`` spells
#: it (SQLite uses a partial index only when the query repeats its WHERE clause).
_WAKE_SQL = "state IN ('failed', 'scheduled') AND retry_at_ms IS NOT NULL"


class FiringsMixin(StoreMixin):
    #: Payload bodies by id. Every run reads its firing's, and the firings of a schedule share
    #: one: the lookup was ~4 % of a no-op Python run. A payload row never changes (it is
    #: content-addressed); only a purge deletes rows, after which SQLite may give a deleted id
    #: to a new body, so a purge empties this once it has committed (before any firing can
    #: refer to a new row: that takes a later commit).
    _bodies: SmallCache[int, str]
    #: Runs' starts written together (:mod:`schedd.store.starts`).
    _starts: StartGroups

    # --- payloads -------------------------------------------------------------------------

    async def load_payload(self, payload_id: int) -> str:
        body = self._bodies.get(payload_id)
        if body is not None:
            return body
        # Inline: the thread round trip of a read was most of its cost.
        rows = self._peek("SELECT body FROM payloads WHERE id = ?", (payload_id,))
        if not rows:
            raise NotFound(f"payload id {payload_id} does not exist")
        body = str(rows[0][0])
        return self._bodies.put(payload_id, body, len(body))

    # --- firings and runs -----------------------------------------------------------------

    async def get_firing(self, key: str) -> FiringRecord:
        rows = await self._read(f"SELECT {FIRING_COLS} FROM firings WHERE key = ?", (key,))
        if not rows:
            raise NotFound(f"firing {key!r} does not exist")
        return firing_row(rows[0])

    async def room_for_run(self) -> None:
        await self._behind_room()
        await self._starts.room()

    async def start_run(
        self,
        ticket: Ticket,
        process: ProcessRef | None,
        now_ms: int,
        ended: Callable[[], RunFinish | None] = not_ended,
    ) -> int:
        return await self._starts.start(ticket, process, now_ms, ended)

    async def finish_run(self, run_id: int, finish: RunFinish) -> None:
        async def unit(conn: Conn) -> None:
            ended = await conn.execute_fetchall(RUN_FINISH, (*run_end(finish), run_id))
            if not ended:
                raise IllegalTransition(f"run {run_id} is not running")
            await end_firing(conn, finish)

        await self._write(unit, behind=True)

    async def set_firing_state(
        self, firing_id: int, state: FiringState, *, reason: str | None, now_ms: int
    ) -> None:
        async def unit(conn: Conn) -> None:
            await transition(conn, firing_id, state, now_ms=now_ms, reason=reason)

        await self._write(unit)

    async def recover(self, now_ms: int) -> list[RecoveredRun]:
        async def unit(conn: Conn) -> list[RecoveredRun]:
            rows = await conn.execute_fetchall(
                "SELECT r.id, f.key, r.pid, r.pgid, r.proc_start FROM runs r"
                " JOIN firings f ON f.id = r.firing_id WHERE r.state = 'running'"
            )
            lost = [
                RecoveredRun(r[0], r[1], None if r[2] is None else ProcessRef(r[2], r[3], r[4]))
                for r in rows
            ]
            await conn.execute(
                "UPDATE runs SET state = 'lost', ended_ms = ?,"
                " reason = 'the daemon stopped during the run' WHERE state = 'running'",
                (now_ms,),
            )
            # Committed ones first: those moved from running must not count twice.
            await conn.execute(
                f"UPDATE firings SET attempt = attempt + 1, updated_ms = ? WHERE {READY_SQL}",
                (now_ms,),
            )
            await conn.execute(
                "UPDATE firings SET state = 'committed', attempt = attempt + 1, updated_ms = ?"
                f" WHERE {OPEN_SQL} AND state = 'running'",
                (now_ms,),
            )
            return lost

        return await self._write(unit)

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
        where = ["r.id < ?"]
        args: list[Any] = [before_id if before_id is not None else 2**62]
        if schedule is not None:
            where.append("r.schedule = ?")
            args.append(schedule)
        if states is not None:
            where.append(f"r.state IN ({marks(len(states))})")
            args.extend(states)
        if since_ms is not None:
            where.append("r.started_ms >= ?")
            args.append(since_ms)
        if key is not None:
            where.append("f.key = ?")
            args.append(key)
        rows = await self._read(
            f"SELECT {RUN_COLS}, r.output_bytes, r.output_truncated FROM runs r"
            f" JOIN firings f ON f.id = r.firing_id WHERE {' AND '.join(where)}"
            " ORDER BY r.id DESC LIMIT ?",
            (*args, limit),
        )
        return [run_row(r) for r in rows]

    async def get_run(self, run_id: int) -> RunRecord:
        rows = await self._read(
            f"SELECT {RUN_COLS}, r.output_bytes, r.output_truncated, r.output FROM runs r"
            " JOIN firings f ON f.id = r.firing_id WHERE r.id = ?",
            (run_id,),
        )
        if not rows:
            raise NotFound(f"run {run_id} does not exist")
        return run_row(rows[0], output=rows[0][16])

    async def last_successes(self) -> dict[str, int]:
        # One pass over ``runs``: no index holds (schedule, state, ended_ms). Left alone, SQLite
        # walks ``runs_by_schedule`` to skip the GROUP BY sort and then fetches every row at
        # random; a plain scan grouping 100 names is 4-5x faster (100k runs: ~20 ms against ~85
        # ms warm; 1M: ~0.2 s against ~1.1 s), hence NOT INDEXED. Called at start-up and on
        # reload only, on the reader, so it never delays a commit.
        rows = await self._read(
            "SELECT schedule, max(ended_ms) FROM runs NOT INDEXED"
            " WHERE state = 'succeeded' GROUP BY schedule"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def count_firings(self, states: Sequence[FiringState]) -> int:
        # Spelled with literals, and inside the WHERE term of the partial index that holds
        # them: with bound parameters SQLite cannot prove a partial index applies and scans the
        # whole table (27 ms at 500 000 firings for an empty dead-letter queue).
        rows = await self._read(f"SELECT count(*) FROM firings WHERE {state_sql(states)}")
        return int(rows[0][0])

    async def count_firings_of(self, schedule: str, states: Sequence[FiringState]) -> int:
        rows = await self._read(
            f"SELECT count(*) FROM firings WHERE schedule = ? AND state IN ({marks(len(states))})",
            [schedule, *(s.value for s in states)],
        )
        return int(rows[0][0])

    # --- retries ----------------------------------------------------------------------------

    async def due_retries(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int]]:
        at, fid = after if after is not None else (-(2**62), -1)
        rows = await self._read(
            f"SELECT retry_at_ms, id FROM firings WHERE {_WAKE_SQL}"
            " AND (retry_at_ms, id) > (?, ?) AND retry_at_ms <= ?"
            " ORDER BY retry_at_ms, id LIMIT ?",
            (at, fid, until_ms, limit),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    async def start_retries(self, firing_ids: Sequence[int], now_ms: int) -> RetryBatch:
        async def unit(conn: Conn) -> RetryBatch:
            tickets: list[Ticket] = []
            not_due: list[tuple[int, int]] = []
            for chunk in chunks(list(firing_ids)):
                rows = await conn.execute_fetchall(
                    f"SELECT id, retry_at_ms FROM firings WHERE id IN ({marks(len(chunk))})"
                    f" AND {_WAKE_SQL}",
                    chunk,
                )
                due = [int(r[0]) for r in rows if r[1] <= now_ms]
                not_due.extend((int(r[1]), int(r[0])) for r in rows if r[1] > now_ms)
                if not due:
                    continue
                await conn.execute(
                    "UPDATE firings SET state = 'committed',"
                    " attempt = attempt + CASE state WHEN 'failed' THEN 1 ELSE 0 END,"
                    " retry_at_ms = NULL, updated_ms = ?"
                    f" WHERE id IN ({marks(len(due))})",
                    (now_ms, *due),
                )
                fresh = await conn.execute_fetchall(
                    f"SELECT {FIRING_COLS} FROM firings WHERE id IN ({marks(len(due))})"
                    " ORDER BY id",
                    due,
                )
                tickets.extend(firing_row(r).ticket() for r in fresh)
            return RetryBatch(tuple(tickets), tuple(not_due))

        return await self._write(unit)

    # --- the dead-letter queue ----------------------------------------------------------------

    async def list_dead(
        self, *, schedule: str | None, limit: int, before_id: int | None = None
    ) -> list[FiringRecord]:
        where = [DLQ_SQL, "id < ?"]
        args: list[Any] = [before_id if before_id is not None else 2**62]
        if schedule is not None:
            where.append("schedule = ?")
            args.append(schedule)
        rows = await self._read(
            f"SELECT {FIRING_COLS} FROM firings WHERE {' AND '.join(where)}"
            " ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [firing_row(r) for r in rows]

    async def oldest_dead_ms(self) -> int | None:
        rows = await self._read(f"SELECT min(updated_ms) FROM firings WHERE {DLQ_SQL}")
        return None if rows[0][0] is None else int(rows[0][0])

    async def get_firing_by_id(self, firing_id: int) -> FiringRecord:
        rows = await self._read(f"SELECT {FIRING_COLS} FROM firings WHERE id = ?", (firing_id,))
        if not rows:
            raise NotFound(f"firing id {firing_id} does not exist")
        return firing_row(rows[0])

    async def runs_of(self, firing_id: int) -> list[RunRecord]:
        rows = await self._read(
            f"SELECT {RUN_COLS}, r.output_bytes, r.output_truncated, r.output FROM runs r"
            " JOIN firings f ON f.id = r.firing_id WHERE r.firing_id = ? ORDER BY r.id",
            (firing_id,),
        )
        return [run_row(r, output=r[16]) for r in rows]

    async def requeue(self, firing_id: int, now_ms: int) -> Ticket:
        async def unit(conn: Conn) -> Ticket:
            rows = list(
                await conn.execute_fetchall("SELECT state FROM firings WHERE id = ?", (firing_id,))
            )
            if not rows:
                raise NotFound(f"firing id {firing_id} does not exist")
            if FiringState(rows[0][0]) not in DLQ_STATES:
                raise IllegalTransition(
                    f"firing id {firing_id} is {rows[0][0]}, not in the dead-letter queue"
                    " (only dead or quarantined firings can be retried)"
                )
            await transition(
                conn,
                firing_id,
                FiringState.COMMITTED,
                now_ms=now_ms,
                reason="retried by an operator",
                set_sql=", attempt = attempt + 1, retry_at_ms = NULL",
            )
            rows = list(
                await conn.execute_fetchall(
                    f"SELECT {FIRING_COLS} FROM firings WHERE id = ?", (firing_id,)
                )
            )
            return firing_row(rows[0]).ticket()

        return await self._write(unit)

    async def purge_dead(
        self, *, firing_ids: Sequence[int] | None, older_than_ms: int | None
    ) -> int:
        if firing_ids is None and older_than_ms is None:
            raise InvalidArgument("purge needs firing ids or an age")

        async def unit(conn: Conn) -> int:
            where, args = [DLQ_SQL], list[Any]()
            if firing_ids is not None:
                where.append(f"id IN ({marks(len(firing_ids))})")
                args.extend(firing_ids)
            if older_than_ms is not None:
                where.append("updated_ms < ?")
                args.append(older_than_ms)
            rows = await conn.execute_fetchall(
                f"SELECT id, payload_id FROM firings WHERE {' AND '.join(where)}", args
            )
            ids = [int(r[0]) for r in rows]
            payloads = sorted({int(r[1]) for r in rows})
            for chunk in chunks(ids):
                await conn.execute(
                    f"DELETE FROM runs WHERE firing_id IN ({marks(len(chunk))})", chunk
                )
                await conn.execute(f"DELETE FROM firings WHERE id IN ({marks(len(chunk))})", chunk)
            for chunk in chunks(payloads):
                await conn.execute(
                    f"DELETE FROM payloads WHERE id IN ({marks(len(chunk))})"
                    " AND NOT EXISTS (SELECT 1 FROM firings f WHERE f.payload_id = payloads.id)"
                    " AND NOT EXISTS (SELECT 1 FROM schedules s WHERE s.payload_id = payloads.id)",
                    chunk,
                )
            return len(ids)

        purged = await self._write(unit)
        self._bodies.clear()
        return purged
