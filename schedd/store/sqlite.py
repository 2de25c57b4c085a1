"""The SQLite store: WAL mode, one group-committing writer, two read-only readers.

Why separate readers: an admin read on the writer would queue behind a 500 000-row commit. The
readers are opened read-only (``mode=ro`` + ``query_only``) and run every query as its own short
transaction, which never pins the WAL long enough to starve a checkpoint. Queries go to
aiosqlite's thread (``_read``), so a long listing runs off the loop; lookups by primary key
(``_peek``: a run's payload) run inline on the loop, where they cost microseconds instead of a
thread round trip. All writes go through
:class:`~schedd.store.writer.GroupWriter` (see there for why only one connection writes).

``synchronous`` is FULL by default: a commit that returned survives power loss if the disk
honours fsync. NORMAL survives process crashes but may roll back the last commits on power loss;
generated firings then reappear with the same keys (``fired_through`` rolls back with them).

This module holds only the connections, their lifecycle and the migration; the queries live in
mixins, one module per part of the contract: ``schedules.py`` (reconcile, schedule CRUD,
dispatch), ``intake.py`` (payloads and new firings), ``firings.py`` (runs, retries, the
dead-letter queue), ``backlog.py`` (what operators see and trim of the unfinished work) and
``ready.py`` (committed firings read back into the runner's bounded queues).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from schedd.errors import Unavailable
from schedd.smallcache import SmallCache
from schedd.store.backlog import BacklogMixin
from schedd.store.firings import FiringsMixin
from schedd.store.intake import IntakeMixin
from schedd.store.ready import ReadyMixin
from schedd.store.records import StoreInfo
from schedd.store.schedules import SchedulesMixin
from schedd.store.schema import MIGRATIONS, SCHEMA_VERSION
from schedd.store.starts import StartGroups
from schedd.store.writer import Conn, GroupWriter

log = logging.getLogger("schedd.store")

T = TypeVar("T")

#: How long an inline lookup may wait on a lock (it blocks the loop meanwhile). In WAL mode a
#: reader waits only while the WAL index is being rebuilt, which is rare and short.
PEEK_BUSY_MS = 250


class SqliteStore(SchedulesMixin, IntakeMixin, FiringsMixin, BacklogMixin, ReadyMixin):
    """See :mod:`schedd.store.contract` for the guarantees; this module for the SQLite choices,
    and each mixin's module for its part of the contract."""

    def __init__(
        self, path: Path, *, synchronous: str = "full", busy_timeout_ms: int = 5000
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._r: aiosqlite.Connection | None = None
        self._p: sqlite3.Connection | None = None
        self._writer: GroupWriter | None = None
        self._bodies = SmallCache[int, str]()
        self._starts = StartGroups(functools.partial(self._write, behind=True))

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open both connections; on any failure close what was opened (a leaked aiosqlite or
        commit thread would keep the process from exiting)."""
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opened, configured and migrated on the loop: nothing else runs before the store is
        # open, and the writer then takes the connection over (see writer.py for its threads).
        w = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._writer = GroupWriter(w)
        w.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        [(mode,)] = w.execute("PRAGMA journal_mode = WAL").fetchall()
        if mode != "wal":
            raise Unavailable(f"{self.path}: could not switch the store to WAL mode")
        w.execute(f"PRAGMA synchronous = {'FULL' if self.synchronous == 'full' else 'NORMAL'}")
        w.execute("PRAGMA foreign_keys = ON")
        w.execute("PRAGMA journal_size_limit = 67108864")
        # Statement and savepoint journals in memory: a multi-row statement inside the group
        # transaction otherwise gets a temporary file (open, a write per page, unlink) on the
        # loop's thread; the steady state's dispatches made about one write per firing. They
        # hold the original of each page one statement changes: a batch's worth, bounded.
        w.execute("PRAGMA temp_store = MEMORY")
        self._migrate(w)
        r = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        self._r = r
        await r.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        await r.execute("PRAGMA query_only = 1")
        p = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        self._p = p
        p.execute(f"PRAGMA busy_timeout = {PEEK_BUSY_MS}")
        p.execute("PRAGMA query_only = 1")
        self._writer.start()

    def _migrate(self, w: sqlite3.Connection) -> None:
        [(version,)] = w.execute("PRAGMA user_version").fetchall()
        if version > SCHEMA_VERSION:
            raise Unavailable(
                f"{self.path}: store schema version {version} is newer than this schedd"
                f" understands ({SCHEMA_VERSION}); run a newer schedd or restore a backup"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            w.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[target - 1]:
                    w.execute(stmt)
                w.execute(f"PRAGMA user_version = {target}")
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
            log.info("store migrated to schema version %d", target)

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                await writer.stop()
            finally:
                await writer.close()
        if self._r is not None:
            await self._r.close()
            self._r = None
        if self._p is not None:
            self._p.close()
            self._p = None

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

    def _peek(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        if self._p is None:
            raise Unavailable("the store is closed")
        return self._p.execute(sql, args).fetchall()

    async def _write(self, unit: Callable[[Conn], Awaitable[T]], *, behind: bool = False) -> T:
        return await self.writer.run(unit, behind=behind)

    async def _behind_room(self) -> None:
        await self.writer.behind_room()

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
