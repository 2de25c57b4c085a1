"""The SQLite store: WAL mode, one group-committing writer, one read-only reader.

Why two connections: aiosqlite runs each connection's statements in order on its own thread, so
an admin read on the writer would queue behind a 500 000-row commit. The reader is opened
read-only (``mode=ro`` + ``query_only``) and runs every query as its own short transaction, which
never pins the WAL long enough to starve a checkpoint. All writes go through
:class:`~schedd.store.writer.GroupWriter` (see there for why only one connection writes).

``synchronous`` is FULL by default: a commit that returned survives power loss if the disk
honours fsync. NORMAL survives process crashes but may roll back the last commits on power loss;
generated firings then reappear with the same keys (``fired_through`` rolls back with them).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from schedd.errors import Conflict, IllegalTransition, NotFound, Unavailable
from schedd.model import (
    FINAL_STATES,
    FiringState,
    ScheduleSpec,
    Source,
    can_transition,
    policies_from_json,
    schedule_rule_to_json,
    trigger_from_json,
)
from schedd.payload import decode_payload, encode_payload, payload_digest
from schedd.store.contract import Planner
from schedd.store.records import (
    FiringRecord,
    NewFiring,
    ProcessRef,
    ReconcileSummary,
    RecoveredRun,
    RunFinish,
    RunRecord,
    ScheduleRecord,
    ScheduleRule,
    StoreInfo,
    Ticket,
)
from schedd.store.schema import MIGRATIONS, SCHEMA_VERSION
from schedd.store.writer import GroupWriter

log = logging.getLogger("schedd.store")

#: SQLite's default limit on bound parameters is 32766 on 3.32+; stay far below it.
CHUNK = 500

_FIRING_COLS = (
    "id, key, schedule_id, schedule, scheduled_for_ms, due_ms, state, attempt, crashes,"
    " payload_id, lane, reason, created_ms, updated_ms"
)
_RUN_COLS = (
    "r.id, r.firing_id, f.key, r.schedule, r.attempt, r.state, r.pid, r.pgid, r.proc_start,"
    " r.started_ms, r.ended_ms, r.exit_code, r.signal, r.reason"
)
_FINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(FINAL_STATES))
_SCHEDULE_SELECT = f"""
    SELECT s.id, s.name, s.source, s.rule, p.body, s.paused, s.fired_through_ms,
           s.next_fire_ms, s.next_due_ms, s.created_ms, s.updated_ms,
           (SELECT f.state || ' ' || f.updated_ms FROM firings f
             WHERE f.schedule = s.name AND f.state IN ({_FINAL_SQL})
             ORDER BY f.id DESC LIMIT 1)
      FROM schedules s JOIN payloads p ON p.id = s.payload_id
"""


def _chunks(seq: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _firing(row: sqlite3.Row | tuple[Any, ...]) -> FiringRecord:
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
    )


def _run(row: sqlite3.Row | tuple[Any, ...], output: bytes | None = None) -> RunRecord:
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


def _schedule(row: sqlite3.Row | tuple[Any, ...]) -> ScheduleRecord:
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
    )


def spec_digest(spec: ScheduleSpec) -> str:
    """What makes two schedule definitions the same, for reconcile's "changed" test."""
    rule = json.dumps(schedule_rule_to_json(spec), sort_keys=True)
    return payload_digest(rule + "\n" + encode_payload(spec.task, spec.policies))


async def _transition(
    conn: aiosqlite.Connection,
    firing_id: int,
    new: FiringState,
    *,
    now_ms: int,
    reason: str | None = None,
    set_sql: str = "",
    set_args: Sequence[Any] = (),
) -> FiringState:
    """Change one firing's state if the lifecycle table allows it; return the old state."""
    rows = list(
        await conn.execute_fetchall("SELECT state, key FROM firings WHERE id = ?", (firing_id,))
    )
    if not rows:
        raise NotFound(f"firing id {firing_id} does not exist")
    old = FiringState(rows[0][0])
    if not can_transition(old, new):
        raise IllegalTransition(f"firing {rows[0][1]}: {old} -> {new} is not allowed")
    await conn.execute(
        f"UPDATE firings SET state = ?, reason = ?, updated_ms = ?{set_sql} WHERE id = ?",
        (new.value, reason, now_ms, *set_args, firing_id),
    )
    return old


class SqliteStore:
    """See :mod:`schedd.store.contract` for the guarantees; this module for the SQLite choices."""

    def __init__(
        self, path: Path, *, synchronous: str = "full", busy_timeout_ms: int = 5000
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._writer: GroupWriter | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open both connections; on any failure close what was opened (a leaked aiosqlite
        thread would keep the process from exiting)."""
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        w = await aiosqlite.connect(self.path, isolation_level=None)
        self._w = w
        await w.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        mode = await w.execute_fetchall("PRAGMA journal_mode = WAL")
        if next(iter(mode))[0] != "wal":
            raise Unavailable(f"{self.path}: could not switch the store to WAL mode")
        await w.execute(
            f"PRAGMA synchronous = {'FULL' if self.synchronous == 'full' else 'NORMAL'}"
        )
        await w.execute("PRAGMA foreign_keys = ON")
        await w.execute("PRAGMA journal_size_limit = 67108864")
        await self._migrate(w)
        r = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        self._r = r
        await r.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        await r.execute("PRAGMA query_only = 1")
        self._writer = GroupWriter(w)
        self._writer.start()

    async def _migrate(self, w: aiosqlite.Connection) -> None:
        version = next(iter(await w.execute_fetchall("PRAGMA user_version")))[0]
        if version > SCHEMA_VERSION:
            raise Unavailable(
                f"{self.path}: store schema version {version} is newer than this schedd"
                f" understands ({SCHEMA_VERSION}); run a newer schedd or restore a backup"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            await w.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[target - 1]:
                    await w.execute(stmt)
                await w.execute(f"PRAGMA user_version = {target}")
                await w.execute("COMMIT")
            except BaseException:
                await w.rollback()
                raise
            log.info("store migrated to schema version %d", target)

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._w is not None:
            try:
                await self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                await self._w.close()
            self._w = None
        if self._r is not None:
            await self._r.close()
            self._r = None

    @property
    def writer(self) -> GroupWriter:
        if self._writer is None:
            raise Unavailable("the store is closed")
        return self._writer

    @property
    def _reader(self) -> aiosqlite.Connection:
        if self._r is None:
            raise Unavailable("the store is closed")
        return self._r

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return list(await self._reader.execute_fetchall(sql, args))

    async def info(self) -> StoreInfo:
        def size(p: Path) -> int:
            try:
                return p.stat().st_size
            except FileNotFoundError:
                return 0

        return StoreInfo(
            path=str(self.path),
            size_bytes=size(self.path),
            wal_bytes=size(self.path.with_name(self.path.name + "-wal")),
            schema_version=SCHEMA_VERSION,
            synchronous=self.synchronous,
            sqlite_version=sqlite3.sqlite_version,
        )

    # --- schedules ------------------------------------------------------------------------

    @staticmethod
    async def _payload_id(conn: aiosqlite.Connection, body: str) -> int:
        digest = payload_digest(body)
        await conn.execute(
            "INSERT INTO payloads (sha256, size, body) VALUES (?, ?, ?)"
            " ON CONFLICT(sha256) DO NOTHING",
            (digest, len(body.encode()), body),
        )
        rows = list(
            await conn.execute_fetchall("SELECT id FROM payloads WHERE sha256 = ?", (digest,))
        )
        return int(rows[0][0])

    async def reconcile(
        self,
        specs: Sequence[ScheduleSpec],
        *,
        initial: Callable[[ScheduleSpec, int | None], tuple[int | None, int | None]],
        now_ms: int,
    ) -> ReconcileSummary:
        async def unit(conn: aiosqlite.Connection) -> ReconcileSummary:
            rows = await conn.execute_fetchall(
                "SELECT id, name, source, spec_hash, fired_through_ms FROM schedules"
            )
            stored = {r[1]: r for r in rows}
            added: list[str] = []
            changed: list[str] = []
            unchanged = 0
            for spec in specs:
                digest = spec_digest(spec)
                row = stored.get(spec.name)
                if row is not None and row[2] != Source.CONFIG.value:
                    raise Conflict(
                        f"schedules.{spec.name}: a schedule of that name was added through the"
                        " admin API; remove it first or rename the config schedule"
                    )
                if row is not None and row[3] == digest:
                    unchanged += 1
                    continue
                payload_id = await self._payload_id(conn, encode_payload(spec.task, spec.policies))
                rule = json.dumps(schedule_rule_to_json(spec), sort_keys=True)
                if row is None:
                    next_fire, next_due = initial(spec, None)
                    await conn.execute(
                        "INSERT INTO schedules (name, source, rule, payload_id, spec_hash,"
                        " next_fire_ms, next_due_ms, created_ms, updated_ms)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            spec.name,
                            spec.source.value,
                            rule,
                            payload_id,
                            digest,
                            next_fire,
                            next_due,
                            now_ms,
                            now_ms,
                        ),
                    )
                    added.append(spec.name)
                else:
                    next_fire, next_due = initial(spec, row[4])
                    await conn.execute(
                        "UPDATE schedules SET rule = ?, payload_id = ?, spec_hash = ?,"
                        " next_fire_ms = ?, next_due_ms = ?, updated_ms = ? WHERE id = ?",
                        (rule, payload_id, digest, next_fire, next_due, now_ms, row[0]),
                    )
                    changed.append(spec.name)
            wanted = {s.name for s in specs}
            removed = [
                name
                for name, r in stored.items()
                if r[2] == Source.CONFIG.value and name not in wanted
            ]
            for name in removed:
                await conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
            return ReconcileSummary(tuple(added), tuple(changed), tuple(sorted(removed)), unchanged)

        return await self.writer.run(unit)

    async def get_schedule(self, name: str) -> ScheduleRecord:
        rows = await self._read(_SCHEDULE_SELECT + " WHERE s.name = ?", (name,))
        if not rows:
            raise NotFound(f"schedule {name!r} does not exist")
        return _schedule(rows[0])

    async def list_schedules(
        self, *, limit: int, after_name: str | None = None
    ) -> list[ScheduleRecord]:
        rows = await self._read(
            _SCHEDULE_SELECT + " WHERE s.name > ? ORDER BY s.name LIMIT ?",
            (after_name or "", limit),
        )
        return [_schedule(r) for r in rows]

    async def count_schedules(self) -> int:
        rows = await self._read("SELECT count(*) FROM schedules")
        return int(rows[0][0])

    async def due_schedules(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int]]:
        due, sid = after if after is not None else (-(2**62), -1)
        rows = await self._read(
            "SELECT next_due_ms, id FROM schedules"
            " WHERE next_due_ms IS NOT NULL AND paused = 0"
            " AND (next_due_ms, id) > (?, ?) AND next_due_ms <= ?"
            " ORDER BY next_due_ms, id LIMIT ?",
            (due, sid, until_ms, limit),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    async def dispatch(self, schedule_ids: Sequence[int], planner: Planner) -> list[Ticket]:
        async def unit(conn: aiosqlite.Connection) -> list[Ticket]:
            tickets: list[Ticket] = []
            for chunk in _chunks(list(schedule_ids)):
                rows = await conn.execute_fetchall(
                    "SELECT id, name, rule, paused, fired_through_ms, next_fire_ms,"
                    f" next_due_ms, payload_id FROM schedules WHERE id IN ({_marks(len(chunk))})",
                    chunk,
                )
                firings: list[NewFiring] = []
                updates: list[tuple[Any, ...]] = []
                for r in rows:
                    rule = ScheduleRule(
                        r[0], r[1], json.loads(r[2]), bool(r[3]), r[4], r[5], r[6], r[7]
                    )
                    plan = planner(rule)
                    if plan is None:
                        continue
                    old_hw = rule.fired_through_ms
                    if old_hw is not None and (
                        plan.fired_through_ms is None or plan.fired_through_ms < old_hw
                    ):
                        raise IllegalTransition(
                            f"schedule {rule.name!r}: high-water mark may not move back"
                            f" ({old_hw} -> {plan.fired_through_ms})"
                        )
                    firings.extend(plan.firings)
                    updates.append(
                        (plan.fired_through_ms, plan.next_fire_ms, plan.next_due_ms, rule.id)
                    )
                await conn.executemany(
                    "UPDATE schedules SET fired_through_ms = ?, next_fire_ms = ?,"
                    " next_due_ms = ? WHERE id = ?",
                    updates,
                )
                tickets.extend(await self._insert_firings(conn, firings))
            return tickets

        return await self.writer.run(unit)

    async def _insert_firings(
        self, conn: aiosqlite.Connection, firings: Sequence[NewFiring]
    ) -> list[Ticket]:
        if not firings:
            return []
        keys = [f.key for f in firings]
        existing = {
            r[0]
            for r in await conn.execute_fetchall(
                f"SELECT key FROM firings WHERE key IN ({_marks(len(keys))})", keys
            )
        }
        fresh = [f for f in firings if f.key not in existing]
        if existing:
            log.warning(
                "%d generated firing keys already existed; kept the stored ones", len(existing)
            )
        now_rows = [
            (
                f.key,
                f.schedule_id,
                f.schedule,
                f.scheduled_for_ms,
                f.due_ms,
                f.state.value,
                f.payload_id,
                f.lane,
                f.reason,
                f.due_ms,
                f.due_ms,
            )
            for f in fresh
        ]
        await conn.executemany(
            "INSERT INTO firings (key, schedule_id, schedule, scheduled_for_ms, due_ms, state,"
            " attempt, payload_id, lane, reason, created_ms, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
            now_rows,
        )
        committed = [f.key for f in fresh if f.state is FiringState.COMMITTED]
        if not committed:
            return []
        rows = await conn.execute_fetchall(
            f"SELECT {_FIRING_COLS} FROM firings WHERE key IN ({_marks(len(committed))})"
            " ORDER BY id",
            committed,
        )
        return [_firing(r).ticket() for r in rows]

    async def insert_firing(self, firing: NewFiring) -> tuple[FiringRecord, bool]:
        async def unit(conn: aiosqlite.Connection) -> tuple[FiringRecord, bool]:
            created = (
                bool(await self._insert_firings(conn, [firing]))
                or firing.state is not FiringState.COMMITTED
            )
            rows = list(
                await conn.execute_fetchall(
                    f"SELECT {_FIRING_COLS} FROM firings WHERE key = ?", (firing.key,)
                )
            )
            return _firing(rows[0]), created

        return await self.writer.run(unit)

    # --- payloads -------------------------------------------------------------------------

    async def load_payload(self, payload_id: int) -> str:
        rows = await self._read("SELECT body FROM payloads WHERE id = ?", (payload_id,))
        if not rows:
            raise NotFound(f"payload id {payload_id} does not exist")
        return str(rows[0][0])

    # --- firings and runs -----------------------------------------------------------------

    async def get_firing(self, key: str) -> FiringRecord:
        rows = await self._read(f"SELECT {_FIRING_COLS} FROM firings WHERE key = ?", (key,))
        if not rows:
            raise NotFound(f"firing {key!r} does not exist")
        return _firing(rows[0])

    async def start_run(self, ticket: Ticket, process: ProcessRef | None, now_ms: int) -> int:
        async def unit(conn: aiosqlite.Connection) -> int:
            await _transition(conn, ticket.firing_id, FiringState.RUNNING, now_ms=now_ms)
            cur = await conn.execute(
                "INSERT INTO runs (firing_id, schedule, attempt, state, pid, pgid, proc_start,"
                " started_ms) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (
                    ticket.firing_id,
                    ticket.schedule,
                    ticket.attempt,
                    process.pid if process else None,
                    process.pgid if process else None,
                    process.start_ticks if process else None,
                    now_ms,
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self.writer.run(unit)

    async def finish_run(self, finish: RunFinish) -> None:
        async def unit(conn: aiosqlite.Connection) -> None:
            cur = await conn.execute(
                "UPDATE runs SET state = ?, ended_ms = ?, exit_code = ?, signal = ?, reason = ?,"
                " output = ?, output_bytes = ?, output_truncated = ?"
                " WHERE id = ? AND state = 'running'",
                (
                    finish.outcome,
                    finish.ended_ms,
                    finish.exit_code,
                    finish.signal,
                    finish.reason,
                    finish.output,
                    finish.output_bytes,
                    int(finish.output_truncated),
                    finish.run_id,
                ),
            )
            if cur.rowcount != 1:
                raise IllegalTransition(f"run {finish.run_id} is not running")
            await _transition(
                conn,
                finish.firing_id,
                finish.firing_state,
                now_ms=finish.ended_ms,
                reason=finish.reason,
                set_sql=", crashes = crashes + ?",
                set_args=(int(finish.crashed),),
            )

        await self.writer.run(unit)

    async def set_firing_state(
        self, firing_id: int, state: FiringState, *, reason: str | None, now_ms: int
    ) -> None:
        async def unit(conn: aiosqlite.Connection) -> None:
            await _transition(conn, firing_id, state, now_ms=now_ms, reason=reason)

        await self.writer.run(unit)

    async def recover(self, now_ms: int) -> list[RecoveredRun]:
        async def unit(conn: aiosqlite.Connection) -> list[RecoveredRun]:
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
            await conn.execute(
                "UPDATE firings SET state = 'committed', attempt = attempt + 1, updated_ms = ?"
                " WHERE state IN ('committed', 'running')",
                (now_ms,),
            )
            return lost

        return await self.writer.run(unit)

    async def unfinished(self, *, after_id: int, limit: int) -> list[FiringRecord]:
        rows = await self._read(
            f"SELECT {_FIRING_COLS} FROM firings WHERE state = 'committed' AND id > ?"
            " ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [_firing(r) for r in rows]

    async def list_runs(
        self, *, schedule: str | None, limit: int, before_id: int | None = None
    ) -> list[RunRecord]:
        where = ["r.id < ?"]
        args: list[Any] = [before_id if before_id is not None else 2**62]
        if schedule is not None:
            where.append("r.schedule = ?")
            args.append(schedule)
        rows = await self._read(
            f"SELECT {_RUN_COLS}, r.output_bytes, r.output_truncated FROM runs r"
            f" JOIN firings f ON f.id = r.firing_id WHERE {' AND '.join(where)}"
            " ORDER BY r.id DESC LIMIT ?",
            (*args, limit),
        )
        return [_run(r) for r in rows]

    async def get_run(self, run_id: int) -> RunRecord:
        rows = await self._read(
            f"SELECT {_RUN_COLS}, r.output_bytes, r.output_truncated, r.output FROM runs r"
            " JOIN firings f ON f.id = r.firing_id WHERE r.id = ?",
            (run_id,),
        )
        if not rows:
            raise NotFound(f"run {run_id} does not exist")
        return _run(rows[0], output=rows[0][16])

    async def count_firings(self, states: Sequence[FiringState]) -> int:
        rows = await self._read(
            f"SELECT count(*) FROM firings WHERE state IN ({_marks(len(states))})",
            [s.value for s in states],
        )
        return int(rows[0][0])

    async def count_firings_of(self, schedule: str, states: Sequence[FiringState]) -> int:
        rows = await self._read(
            f"SELECT count(*) FROM firings WHERE schedule = ? AND state IN ({_marks(len(states))})",
            [schedule, *(s.value for s in states)],
        )
        return int(rows[0][0])
