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

**Checkpoints run when the writer is idle, not inside a COMMIT.** SQLite's automatic checkpoint
runs in the COMMIT that takes the WAL past its threshold (1 000 pages by default), and that
COMMIT pays for copying every page back to the database and an fsync of it: in the steady state
(1 000 firings a second) that was every 15-20th commit, 4-6 ms instead of 0.5-2, and the
firings queued behind it made most of the lateness p99 (11 ms; 7 ms with no automatic
checkpoint). So the writer checkpoints itself once it has had nothing to do for
:data:`QUIET_S` after :data:`CHECKPOINT_BATCHES` commits or more: ``PASSIVE``, or ``TRUNCATE``
(which also gives the space back) after :data:`CHECKPOINT_UNITS` units. (Not after every
commit: on a lightly loaded daemon that would copy each commit's pages into the database at
once, writing them twice and fsyncing twice, where a checkpoint of many commits writes a page
changed by all of them once.) A unit arriving meanwhile waits for one checkpoint of what
a burst wrote. SQLite's own threshold stays, raised to :data:`AUTOCHECKPOINT_PAGES`, for a
writer that is never idle (a long pulse): it bounds the WAL, in fewer, larger checkpoints.
Readers use short transactions so a checkpoint can complete.

**Records written behind the work wait their turn, and hold the work back when too many
wait.** A run's start and end rows are committed beside the run (:mod:`schedd.attempt`):
nobody waits for them, and at full pool speed they are most of the units. A firing's commit,
though, is write-ahead and its lateness is the scheduler's. Unchecked, the pool ran as fast as
the event loop could start runs, their rows piled up by the hundred, and a critical lane's
firing waited for batches of them and their longer COMMITs (p99 14 → 50 ms with 100 000 bulk
runs draining). So ``run`` takes ``behind=True`` for such records: a batch holds every other
unit waiting first, then at most :data:`BEHIND_PER_BATCH` of them, oldest first (never
starved: each batch takes its share, and they run alone whenever nothing else waits); and
:meth:`GroupWriter.behind_room` makes a run about to start wait while :data:`MAX_BEHIND` are
queued, so the pool runs no faster than its records can be stored. Measured with that
scenario: the critical lane's p99 back to 17-18 ms, bulk runs 90 000 in 40 s (69 000 when every
start waited for its COMMIT, 100 000 unchecked), no-op Python runs 2 200/s (1 650, 2 500).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from schedd.aio import wait_first

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

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """The rows changed, summed over every row bound (aiosqlite hands back the cursor)."""
        return self._conn.executemany(sql, rows).rowcount


Unit = Callable[[Conn], Awaitable[Any]]
_Item = tuple[Unit, asyncio.Future[Any]]

#: A batch stops growing here (plus its share of units written behind) so one transaction
#: never holds the lock for long.
MAX_UNITS_PER_BATCH = 512
#: Units written behind the work (``run(..., behind=True)``) in one batch, and queued at most
#: before :meth:`GroupWriter.behind_room` holds new runs back (see the module).
BEHIND_PER_BATCH = 8
MAX_BEHIND = 16
#: Savepoints left open (nested) before the chain is released in one statement: SQLite's cost
#: per page written grows with the number of open savepoints.
SAVEPOINT_DEPTH = 16
#: The writer checkpoints once it has been idle this long after this many commits (see the
#: module).
QUIET_S = 0.05
CHECKPOINT_BATCHES = 32
#: Every this many units, the idle checkpoint is a TRUNCATE (it also returns the space).
CHECKPOINT_UNITS = 4096
#: SQLite's automatic checkpoint, for a writer that is never idle: pages of WAL (4 KiB each).
AUTOCHECKPOINT_PAGES = 8192


class GroupWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        quiet: Callable[[], Coroutine[Any, Any, object]] | None = None,
    ) -> None:
        """``quiet``: the idle wait before a checkpoint (:data:`QUIET_S`; tests hold it)."""
        conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        self._raw = conn
        self._quiet = quiet or functools.partial(asyncio.sleep, QUIET_S)
        self._conn = Conn(conn)
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schedd-commit")
        self._ahead: deque[_Item] = deque()
        self._behind: deque[_Item] = deque()
        self._queued = asyncio.Event()
        self._stopping = False
        #: Resolved when the queue of units written behind drops below MAX_BEHIND.
        self._room: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._batches_since_checkpoint = 0
        self._units_since_truncate = 0
        self.batches = 0
        self.units = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="schedd-store-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop; later ``run`` calls fail."""
        if self._task is None:
            return
        self._stopping = True
        self._queued.set()
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

    async def run(self, unit: Callable[[Conn], Awaitable[T]], *, behind: bool = False) -> T:
        """Run ``unit`` in the next group transaction and return its result once committed;
        ``behind``: a record nothing waits for, batched after the units that others wait for
        (see the module)."""
        if self._task is None or self._stopping:
            raise RuntimeError("store writer is not running")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._behind if behind else self._ahead).append((unit, fut))
        self._queued.set()
        # Shielded: a cancelled caller must not leave the batch half-applied from its view;
        # the unit commits or fails with its batch either way.
        return await asyncio.shield(fut)

    async def behind_room(self) -> None:
        """Return once fewer than :data:`MAX_BEHIND` units wait to be written behind."""
        while len(self._behind) >= MAX_BEHIND:
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)  # shared by every waiter: never cancelled

    async def _loop(self) -> None:
        """Batch after batch until stopped; whatever was queued before the stop commits.
        Idle for :data:`QUIET_S` after enough commits, it checkpoints."""
        while True:
            if not (self._ahead or self._behind):
                if self._stopping:
                    return
                self._queued.clear()
                if self._batches_since_checkpoint < CHECKPOINT_BATCHES:
                    await self._queued.wait()
                    continue
                await wait_first(self._queued.wait(), self._quiet())
                if not self._queued.is_set():
                    await self._checkpoint()
                continue
            await self._commit(self._next_batch())

    def _next_batch(self) -> list[_Item]:
        """Every unit waiting ahead (up to the cap), then the oldest few written behind."""
        ahead, behind = self._ahead, self._behind
        batch = [ahead.popleft() for _ in range(min(len(ahead), MAX_UNITS_PER_BATCH))]
        batch += [behind.popleft() for _ in range(min(len(behind), BEHIND_PER_BATCH))]
        if self._room is not None and len(behind) < MAX_BEHIND:
            self._room.set_result(None)
            self._room = None
        return batch

    def _sql(self, statement: str) -> None:
        self._raw.execute(statement)

    async def _on_disk(self, statement: str) -> None:
        """A statement that waits on the disk, run on the commit thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._disk, self._sql, statement)

    async def _commit(self, batch: list[_Item]) -> None:
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
            self._units_since_truncate += len(batch)
            self._batches_since_checkpoint += 1
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

    def _checkpoint_without_waiting(self, mode: str) -> None:
        """A ``mode`` checkpoint that does not wait for readers. A ``TRUNCATE`` waits for every
        reader to leave the WAL, up to the busy timeout (5 s by default), and the writer with
        it: an operator's open ``sqlite3`` shell or a backup in progress would stall every
        firing that long. With no wait it copies what it can, as ``PASSIVE`` does."""
        [(timeout,)] = self._raw.execute("PRAGMA busy_timeout").fetchall()
        self._raw.execute("PRAGMA busy_timeout = 0")
        try:
            self._raw.execute(f"PRAGMA wal_checkpoint({mode})")
        finally:
            self._raw.execute(f"PRAGMA busy_timeout = {int(timeout)}")

    async def _checkpoint(self) -> None:
        """Copy the WAL back into the database while nothing waits; a failed or busy
        checkpoint is tried again after as many commits (SQLite's own threshold bounds the WAL
        meanwhile)."""
        truncate = self._units_since_truncate >= CHECKPOINT_UNITS
        self._batches_since_checkpoint = 0
        loop = asyncio.get_running_loop()
        try:
            mode = "TRUNCATE" if truncate else "PASSIVE"
            await loop.run_in_executor(self._disk, self._checkpoint_without_waiting, mode)
        except Exception as exc:  # noqa: BLE001 - tried again after more commits
            log.warning("WAL checkpoint failed: %s", exc)
            return
        if truncate:
            self._units_since_truncate = 0
