"""Group commit: many writers, one connection, one fsync per batch.

Every write in the daemon is a *unit*: an async function given the writer connection inside an
open ``BEGIN IMMEDIATE`` transaction. Units queue up while the previous batch commits, and the
next batch runs all of them in one transaction, each inside a SAVEPOINT so one failing unit
rolls back alone and reports its error to its own caller. Under load this turns N fsyncs into
one (DESIGN §2: "a pulse does not pay one fsync per firing"); when idle a unit commits at once,
so grouping adds no latency. A caller's ``run`` returns only after the COMMIT of its batch
returned, i.e. (``synchronous=FULL``) after the fsync.

**Statements run on the event loop's thread; only the COMMIT goes to a thread.** A statement
inside a transaction costs microseconds (the pages are in memory, nothing is written until
COMMIT), while a round trip to a connection thread costs a wake-up of that thread and then a
full turn of the loop to resume the unit: tens of microseconds idle, milliseconds on a busy
loop. With aiosqlite's thread per statement, a run's start (BEGIN, UPDATE, INSERT, COMMIT) took
3-4 ms of a 2-core machine under load, and a run paid two of them. Now a batch is one trip to
the commit thread, whatever it holds. The COMMIT (the fsync) and the WAL checkpoint are the only
steps that wait on the disk, so only they leave the loop. Units see :class:`Conn`, the three
calls of aiosqlite's connection they use, so they read the same either way. The connection is a
plain ``sqlite3`` one opened with ``check_same_thread=False``; it is used by one thread at a
time (the loop, or the commit thread while the loop waits for it).

In a larger batch the savepoints are not released one by one: each unit's savepoint nests in
the previous one, and one RELEASE of the outermost merges a chain of ``SAVEPOINT_DEPTH`` of them
(or the COMMIT does). ``ROLLBACK TO`` a unit's savepoint still undoes exactly that unit, because
everything after the savepoint is that unit's work. A batch of one unit has no savepoint (its
failure rolls back the whole transaction, which holds nothing else).

Only this connection writes or checkpoints: SQLite 3.40 (this machine's) has a WAL-reset race
when two connections write or checkpoint at once, and one writer also gives a total order.
``BEGIN IMMEDIATE`` takes the write lock up front, avoiding the deferred-upgrade SQLITE_BUSY.

The WAL is kept bounded by a ``TRUNCATE`` checkpoint when the queue drains and enough pages
have accumulated; readers use short transactions so the checkpoint can complete.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger("schedd.store")

T = TypeVar("T")


class Conn:
    """The writer connection as units see it: aiosqlite's calls, run where the unit runs.

    Coroutines only so that a unit reads like one on any aiosqlite connection; none of them
    suspends."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


Unit = Callable[[Conn], Awaitable[Any]]

#: A batch stops growing here so one transaction never holds the lock for long.
MAX_UNITS_PER_BATCH = 512
#: Savepoints left open (nested) before the chain is released in one statement: SQLite's cost
#: per page written grows with the number of open savepoints.
SAVEPOINT_DEPTH = 16
#: A TRUNCATE checkpoint runs when the queue drains after this many units (the automatic
#: PASSIVE checkpoints keep the WAL near 4 MiB meanwhile; TRUNCATE also returns the space).
CHECKPOINT_UNITS = 4096


class GroupWriter:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._raw = conn
        self._conn = Conn(conn)
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schedd-commit")
        self._queue: asyncio.Queue[tuple[Unit, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._units_since_checkpoint = 0
        self.batches = 0
        self.units = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="schedd-store-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop; later ``run`` calls fail."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def close(self) -> None:
        """After :meth:`stop`: checkpoint the WAL away and close the connection. A failed
        checkpoint is only logged: the WAL is still valid, the next open replays it."""
        try:
            await self._on_disk("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:  # noqa: BLE001 - e.g. a file that never was a store
            log.warning("WAL checkpoint at close failed: %s", exc)
        finally:
            self._disk.shutdown(wait=True)
            self._raw.close()

    async def run(self, unit: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``unit`` in the next group transaction and return its result once committed."""
        if self._task is None:
            raise RuntimeError("store writer is not running")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((unit, fut))
        # Shielded: a cancelled caller must not leave the batch half-applied from its view;
        # the unit commits or fails with its batch either way.
        return await asyncio.shield(fut)

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_UNITS_PER_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)
            if self._queue.empty():
                await self._maybe_checkpoint()

    def _sql(self, statement: str) -> None:
        self._raw.execute(statement)

    async def _on_disk(self, statement: str) -> None:
        """A statement that waits on the disk, run on the commit thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._disk, self._sql, statement)

    async def _commit(self, batch: list[tuple[Unit, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._transaction([unit for unit, _ in batch])
        except Exception as exc:  # noqa: BLE001 - disk full, I/O error: every unit failed
            log.error("store commit failed (%d units rolled back): %s", len(batch), exc)
            try:
                if self._raw.in_transaction:
                    self._sql("ROLLBACK")
            except Exception:
                log.exception("rollback after a failed commit also failed")
            outcomes = [(False, exc)] * len(batch)
        else:
            self.batches += 1
            self.units += len(batch)
            self._units_since_checkpoint += len(batch)
        for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    async def _transaction(self, units: list[Unit]) -> list[tuple[bool, Any]]:
        """Run ``units`` in one transaction and commit; ``(ok, result or exception)`` each.

        Raises only when the transaction as a whole failed (nothing of it is committed)."""
        outcomes: list[tuple[bool, Any]] = []
        nested = len(units) > 1
        self._sql("BEGIN IMMEDIATE")
        for i, unit in enumerate(units):
            if nested and i and i % SAVEPOINT_DEPTH == 0:
                self._sql(f"RELEASE u{i - SAVEPOINT_DEPTH}")
            if nested:
                self._sql(f"SAVEPOINT u{i}")
            try:
                outcomes.append((True, await unit(self._conn)))
            except Exception as exc:  # noqa: BLE001 - reported to the unit's own caller
                self._sql(f"ROLLBACK TO u{i}" if nested else "ROLLBACK")
                outcomes.append((False, exc))
        if nested or outcomes[0][0]:
            await self._on_disk("COMMIT")
        return outcomes

    async def _maybe_checkpoint(self) -> None:
        if self._units_since_checkpoint < CHECKPOINT_UNITS:
            return
        self._units_since_checkpoint = 0
        try:
            await self._on_disk("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:  # noqa: BLE001 - a busy checkpoint is retried next time
            log.warning("WAL checkpoint failed: %s", exc)
