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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from schedd.errors import Conflict, IllegalTransition, NotFound, Unavailable
from schedd.model import (
    FiringState,
    PythonTask,
    ScheduleSpec,
    Source,
    TaskSpec,
    schedule_rule_to_json,
)
from schedd.payload import encode_payload, payload_digest
from schedd.store.contract import Planner
from schedd.store.firings import FiringsMixin
from schedd.store.records import (
    FiringRecord,
    NewFiring,
    ReconcileSummary,
    ScheduleRecord,
    ScheduleRule,
    StoreInfo,
    Ticket,
)
from schedd.store.rows import (
    FIRING_COLS,
    SCHEDULE_SELECT,
    chunks,
    firing_row,
    marks,
    schedule_row,
    spec_digest,
)
from schedd.store.schema import MIGRATIONS, SCHEMA_VERSION
from schedd.store.writer import GroupWriter

log = logging.getLogger("schedd.store")

T = TypeVar("T")


def task_kind(task: TaskSpec) -> str:
    return "python" if isinstance(task, PythonTask) else "command"


class SqliteStore(FiringsMixin):
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

    async def _write(self, unit: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        return await self.writer.run(unit)

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
                body = encode_payload(spec.task, spec.policies, spec.tenant)
                payload_id = await self._payload_id(conn, body)
                rule = json.dumps(schedule_rule_to_json(spec), sort_keys=True)
                if row is None:
                    next_fire, next_due = initial(spec, None)
                    await conn.execute(
                        "INSERT INTO schedules (name, source, rule, payload_id, spec_hash,"
                        " next_fire_ms, next_due_ms, created_ms, updated_ms, task_kind)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                            task_kind(spec.task),
                        ),
                    )
                    added.append(spec.name)
                else:
                    next_fire, next_due = initial(spec, row[4])
                    await conn.execute(
                        "UPDATE schedules SET rule = ?, payload_id = ?, spec_hash = ?,"
                        " next_fire_ms = ?, next_due_ms = ?, updated_ms = ?, task_kind = ?"
                        " WHERE id = ?",
                        (
                            rule,
                            payload_id,
                            digest,
                            next_fire,
                            next_due,
                            now_ms,
                            task_kind(spec.task),
                            row[0],
                        ),
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
        rows = await self._read(SCHEDULE_SELECT + " WHERE s.name = ?", (name,))
        if not rows:
            raise NotFound(f"schedule {name!r} does not exist")
        return schedule_row(rows[0])

    async def list_schedules(
        self, *, limit: int, after_name: str | None = None
    ) -> list[ScheduleRecord]:
        rows = await self._read(
            SCHEDULE_SELECT + " WHERE s.name > ? ORDER BY s.name LIMIT ?",
            (after_name or "", limit),
        )
        return [schedule_row(r) for r in rows]

    async def count_schedules(self) -> int:
        rows = await self._read("SELECT count(*) FROM schedules")
        return int(rows[0][0])

    async def due_schedules(
        self, *, after: tuple[int, int] | None, until_ms: int, limit: int
    ) -> list[tuple[int, int, bool]]:
        due, sid = after if after is not None else (-(2**62), -1)
        rows = await self._read(
            "SELECT next_due_ms, id, task_kind = 'python' FROM schedules"
            " WHERE next_due_ms IS NOT NULL AND paused = 0"
            " AND (next_due_ms, id) > (?, ?) AND next_due_ms <= ?"
            " ORDER BY next_due_ms, id LIMIT ?",
            (due, sid, until_ms, limit),
        )
        return [(int(r[0]), int(r[1]), bool(r[2])) for r in rows]

    async def dispatch(self, schedule_ids: Sequence[int], planner: Planner) -> list[Ticket]:
        async def unit(conn: aiosqlite.Connection) -> list[Ticket]:
            tickets: list[Ticket] = []
            for chunk in chunks(list(schedule_ids)):
                rows = await conn.execute_fetchall(
                    "SELECT id, name, rule, paused, fired_through_ms, next_fire_ms,"
                    f" next_due_ms, payload_id FROM schedules WHERE id IN ({marks(len(chunk))})",
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
                f"SELECT key FROM firings WHERE key IN ({marks(len(keys))})", keys
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
            f"SELECT {FIRING_COLS} FROM firings WHERE key IN ({marks(len(committed))}) ORDER BY id",
            committed,
        )
        return [firing_row(r).ticket() for r in rows]

    async def insert_firing(self, firing: NewFiring) -> tuple[FiringRecord, bool]:
        async def unit(conn: aiosqlite.Connection) -> tuple[FiringRecord, bool]:
            created = (
                bool(await self._insert_firings(conn, [firing]))
                or firing.state is not FiringState.COMMITTED
            )
            rows = list(
                await conn.execute_fetchall(
                    f"SELECT {FIRING_COLS} FROM firings WHERE key = ?", (firing.key,)
                )
            )
            return firing_row(rows[0]), created

        return await self.writer.run(unit)
