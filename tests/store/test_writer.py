"""Group commit (schedd/store/writer.py): many units, one transaction, each answer its own.

Each test holds a batch open with a *gate* unit that waits on an event inside the transaction,
so what queues behind it is known to form the next batch, and what is inside it is known not
to be committed yet. Visibility is checked from a second, independent connection: in WAL mode
it sees a row only once the writer's COMMIT returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from schedd.store import writer as writer_module
from schedd.store.writer import (
    AUTOCHECKPOINT_PAGES,
    BEHIND_PER_BATCH,
    MAX_BEHIND,
    SAVEPOINT_DEPTH,
    Conn,
    GroupWriter,
)

Unit = Callable[[Conn], Awaitable[Any]]


class Boom(Exception):
    """What a failing unit raises, so a test can tell its own error from any other."""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    conn.execute("CREATE TABLE child (p TEXT REFERENCES t(k))")
    conn.close()
    return path


class Trace:
    """The statements a writer's connection executed, in order; a checkpoint, which the commit
    thread runs, is also handed to the loop in ``checkpoints``."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.checkpoints: asyncio.Queue[str] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def __call__(self, sql: str) -> None:
        self.statements.append(sql)
        if "wal_checkpoint" in sql:
            self._loop.call_soon_threadsafe(self.checkpoints.put_nowait, sql)


@contextlib.asynccontextmanager
async def open_writer(
    db: Path, quiet: Callable[[], Coroutine[Any, Any, object]]
) -> AsyncIterator[tuple[GroupWriter, Trace]]:
    """``quiet`` stands for the writer's idle wait before a checkpoint."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    trace = Trace()
    conn.set_trace_callback(trace)
    w = GroupWriter(conn, quiet=quiet)
    w.start()
    try:
        yield w, trace
    finally:
        await w.stop()
        await w.close()


async def never() -> None:
    """An idle wait that never ends: the writer never checkpoints."""
    await asyncio.Event().wait()


async def at_once() -> None:
    """An idle wait over at once: the writer checkpoints whenever its queue is empty."""


@pytest.fixture
async def writer(db: Path) -> AsyncIterator[tuple[GroupWriter, list[str]]]:
    """A running writer that never falls idle long enough to checkpoint, and the statements
    its connection executed: only the units' and their transactions'."""
    async with open_writer(db, quiet=never) as (w, trace):
        yield w, trace.statements


def stored(db: Path) -> dict[str, int]:
    """The committed rows, as any other connection sees them."""
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT k, v FROM t"))
    finally:
        conn.close()


def put(key: str, value: int = 1) -> Unit:
    async def unit(conn: Conn) -> str:
        await conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value))
        return f"put {key}"

    return unit


def put_then_fail(key: str) -> Unit:
    async def unit(conn: Conn) -> str:
        await conn.execute("INSERT INTO t (k, v) VALUES (?, 1)", (key,))
        raise Boom(key)

    return unit


class Gate:
    """A unit that holds its transaction open until released."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, conn: Conn) -> str:
        await conn.execute("INSERT INTO t (k, v) VALUES (?, 0)", (self.key,))
        self.entered.set()
        await self.release.wait()
        return f"gate {self.key}"


def commits(statements: list[str]) -> int:
    return sum(s.strip().upper() == "COMMIT" for s in statements)


async def queued_behind(w: GroupWriter, gate: Gate, units: list[Unit]) -> list[asyncio.Task[Any]]:
    """Start ``units`` while ``gate`` holds the current batch open: they form the next batch."""
    held = asyncio.create_task(w.run(gate))
    await gate.entered.wait()
    tasks = [asyncio.create_task(w.run(u)) for u in units]
    gate.release.set()
    assert await held == f"gate {gate.key}"
    return tasks


async def test_waiting_units_share_one_transaction_and_each_gets_its_own_result(
    writer: tuple[GroupWriter, list[str]], db: Path
) -> None:
    w, statements = writer
    batches, before = w.batches, commits(statements)
    tasks = await queued_behind(w, Gate("g"), [put(f"k{i}", i) for i in range(5)])
    assert await asyncio.gather(*tasks) == [f"put k{i}" for i in range(5)]
    # The gate's batch and theirs: one batch, one COMMIT for all five.
    assert (w.batches - batches, commits(statements) - before) == (2, 2)
    assert stored(db) == {"g": 0, **{f"k{i}": i for i in range(5)}}


@pytest.mark.parametrize("failing", [0, 2, 4])
async def test_a_failing_unit_rolls_back_alone_and_the_others_commit(
    writer: tuple[GroupWriter, list[str]], db: Path, failing: int
) -> None:
    w, statements = writer
    units = [put_then_fail(f"k{i}") if i == failing else put(f"k{i}") for i in range(5)]
    before = commits(statements)
    tasks = await queued_behind(w, Gate("g"), units)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i == failing:
            assert isinstance(result, Boom), "its own error"
            assert result.args == (f"k{i}",)
        else:
            assert result == f"put k{i}"
    assert commits(statements) - before == 2, "the gate's batch and theirs"
    assert set(stored(db)) == {"g"} | {f"k{i}" for i in range(5) if i != failing}


async def test_a_unit_failing_inside_sqlite_does_not_poison_the_batch(
    writer: tuple[GroupWriter, list[str]], db: Path
) -> None:
    w, _ = writer
    await w.run(put("dup"))
    tasks = await queued_behind(w, Gate("g"), [put("a"), put("dup", 9), put("b")])
    a, dup, b = await asyncio.gather(*tasks, return_exceptions=True)
    assert (a, b) == ("put a", "put b")
    assert isinstance(dup, sqlite3.IntegrityError)
    assert stored(db) == {"dup": 1, "g": 0, "a": 1, "b": 1}


async def test_a_lone_failing_unit_leaves_nothing_and_the_writer_carries_on(
    writer: tuple[GroupWriter, list[str]], db: Path
) -> None:
    w, _ = writer
    with pytest.raises(Boom):
        await w.run(put_then_fail("x"))
    assert await w.run(put("y")) == "put y"
    assert stored(db) == {"y": 1}


async def test_no_caller_returns_before_its_batch_committed(
    writer: tuple[GroupWriter, list[str]], db: Path
) -> None:
    w, _ = writer
    last = Gate("last")
    first = Gate("first")
    tasks = await queued_behind(w, first, [put("a"), put("b"), last])
    await last.entered.wait()
    # "a" and "b" have run, but their batch is still open behind "last": not committed,
    # so their callers must still be waiting and no other connection may see the rows.
    assert not any(t.done() for t in tasks)
    assert stored(db) == {"first": 0}
    last.release.set()
    assert await asyncio.gather(*tasks) == ["put a", "put b", "gate last"]
    assert stored(db) == {"first": 0, "a": 1, "b": 1, "last": 0}


async def test_a_failed_commit_fails_every_unit_of_the_batch_and_keeps_nothing(
    writer: tuple[GroupWriter, list[str]], db: Path
) -> None:
    w, _ = writer

    async def orphan(conn: Conn) -> None:
        # A deferred constraint is checked only by COMMIT: the transaction as a whole fails,
        # as it would on a full disk.
        await conn.execute("PRAGMA defer_foreign_keys = ON")
        await conn.execute("INSERT INTO child (p) VALUES ('nobody')")

    tasks = await queued_behind(w, Gate("g"), [put("a"), orphan, put("b")])
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert stored(db) == {"g": 0}
    assert await w.run(put("after")) == "put after", "the writer carries on"
    assert stored(db) == {"g": 0, "after": 1}


async def test_failures_anywhere_in_a_batch_deeper_than_the_savepoint_chain_stay_alone(
    writer: tuple[GroupWriter, list[str]], db: Path
) -> None:
    w, statements = writer
    n, failing = (
        3 * SAVEPOINT_DEPTH + 2,
        {0, 3, SAVEPOINT_DEPTH, SAVEPOINT_DEPTH + 1, 3 * SAVEPOINT_DEPTH + 1},
    )
    units = [put_then_fail(f"k{i}") if i in failing else put(f"k{i}") for i in range(n)]
    before = commits(statements)
    tasks = await queued_behind(w, Gate("g"), units)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(r, Boom) for r in results] == [i in failing for i in range(n)]
    assert commits(statements) - before == 2, "the gate's batch and theirs"
    assert set(stored(db)) == {"g"} | {f"k{i}" for i in range(n) if i not in failing}


def logged(key: str, order: list[str]) -> Unit:
    async def unit(conn: Conn) -> str:
        order.append(key)
        await conn.execute("INSERT INTO t (k, v) VALUES (?, 1)", (key,))
        return key

    return unit


async def test_units_written_behind_follow_the_others_a_few_per_batch(
    writer: tuple[GroupWriter, list[str]], db: Path
) -> None:
    w, _ = writer
    order: list[str] = []
    behind = [f"b{i}" for i in range(BEHIND_PER_BATCH + 2)]
    gate = Gate("g")
    held = asyncio.create_task(w.run(gate))
    await gate.entered.wait()
    tasks = [asyncio.create_task(w.run(logged(k, order), behind=True)) for k in behind]
    tasks += [asyncio.create_task(w.run(logged(k, order))) for k in ("a0", "a1")]
    batches = w.batches
    gate.release.set()
    await held
    assert await asyncio.gather(*tasks) == [*behind, "a0", "a1"]
    # Queued last, the two others went first; the records behind took two batches.
    assert order == ["a0", "a1", *behind]
    assert w.batches - batches == 3, "the gate's, then the others + 8 behind, then 2 behind"
    assert set(stored(db)) == {"g", "a0", "a1", *behind}


async def test_behind_room_waits_while_too_many_records_are_queued_behind(
    writer: tuple[GroupWriter, list[str]],
) -> None:
    w, _ = writer
    await asyncio.wait_for(w.behind_room(), 5)  # nothing queued: at once
    gate = Gate("g")
    held = asyncio.create_task(w.run(gate))
    await gate.entered.wait()
    order: list[str] = []
    tasks = [
        asyncio.create_task(w.run(logged(f"b{i}", order), behind=True)) for i in range(MAX_BEHIND)
    ]
    for _ in range(3):
        await asyncio.sleep(0)  # let every task queue its unit
    room = asyncio.create_task(w.behind_room())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not room.done(), "MAX_BEHIND queued behind a held batch: no room"
    gate.release.set()
    await asyncio.wait_for(room, 5)  # the next batch took some of them
    await held
    await asyncio.gather(*tasks)
    assert len(order) == MAX_BEHIND


PAGE = 4096


def fill(pages: int) -> Unit:
    """A unit writing about ``pages`` pages."""

    async def unit(conn: Conn) -> None:
        # A key of ~1 800 bytes, held by the table and by its index: about a page a row.
        rows = ((f"big{i:05}" + "x" * 1800, i) for i in range(pages))
        await conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", rows)

    return unit


def size(path: Path) -> int:
    return path.stat().st_size


def read(sql: str) -> Callable[[Conn], Awaitable[list[Any]]]:
    async def unit(conn: Conn) -> list[Any]:
        return await conn.execute_fetchall(sql)

    return unit


async def test_a_commit_does_not_checkpoint_however_much_it_wrote(db: Path) -> None:
    """SQLite's own checkpoint (at 1 000 pages by default) ran inside the COMMIT that crossed
    it, and made that commit, and every firing queued behind it, wait for the copy."""
    async with open_writer(db, quiet=never) as (w, trace):
        [(pages,)] = await w.run(read("PRAGMA wal_autocheckpoint"))
        assert pages == AUTOCHECKPOINT_PAGES > 2000
        await w.run(fill(1500))
        await w.run(put("after"))
        assert trace.checkpoints.empty()
        assert size(db) < 1500 * PAGE, "the pages are in the WAL alone"
        assert stored(db)["after"] == 1


async def test_an_idle_writer_checkpoints_what_it_committed_once(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "CHECKPOINT_BATCHES", 1)
    async with open_writer(db, quiet=at_once) as (w, trace):
        await w.run(fill(1500))
        assert await trace.checkpoints.get() == "PRAGMA wal_checkpoint(PASSIVE)"
        await w.run(put("after"))  # its batch starts once the checkpoint has returned
        assert [s for s in trace.statements if "wal_checkpoint" in s] == [
            "PRAGMA wal_checkpoint(PASSIVE)"
        ], "once"
        assert size(db) >= 1500 * PAGE, "the pages were copied into the database"
        assert trace.checkpoints.empty()


async def test_every_so_many_units_the_idle_checkpoint_truncates_the_wal(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "CHECKPOINT_UNITS", 2)
    monkeypatch.setattr(writer_module, "CHECKPOINT_BATCHES", 1)
    async with open_writer(db, quiet=at_once) as (w, trace):
        modes = []
        for unit in (fill(50), put("b"), put("c"), put("d")):
            await w.run(unit)
            modes.append(await trace.checkpoints.get())
        assert modes == [f"PRAGMA wal_checkpoint({m})" for m in ["PASSIVE", "TRUNCATE"] * 2]
        await w.run(put("e"))  # after the TRUNCATE returned
        # A PASSIVE checkpoint leaves the file as large as the 50 pages once were.
        assert size(db.with_name(db.name + "-wal")) < 3 * PAGE
        assert {"b", "c", "d", "e"} <= stored(db).keys()


async def test_an_idle_writer_waits_for_enough_commits_to_checkpoint(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint after every commit of a quiet daemon would write each page twice."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_BATCHES", 3)
    idled: list[int] = []

    async def quiet() -> None:
        idled.append(commits(trace.statements))

    async with open_writer(db, quiet=quiet) as (w, trace):
        for key in "abc":
            # The writer decides, once each batch is committed and before the unit's caller
            # resumes, whether to wait for quiet and checkpoint.
            await w.run(put(key))
            assert idled == ([] if key != "c" else [3])
        assert await trace.checkpoints.get() == "PRAGMA wal_checkpoint(PASSIVE)"


async def test_a_reader_in_the_wal_does_not_hold_the_writer_at_a_truncate(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's open ``sqlite3`` shell (or a backup) holds a snapshot in the WAL; a
    TRUNCATE checkpoint waiting for it would hold every firing for the busy timeout."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_UNITS", 1)
    monkeypatch.setattr(writer_module, "CHECKPOINT_BATCHES", 1)
    shell = sqlite3.connect(db, isolation_level=None)
    try:
        async with open_writer(db, quiet=at_once) as (w, trace):
            w._raw.execute("PRAGMA busy_timeout = 20000")  # were it waited for
            await w.run(put("a"))
            shell.execute("BEGIN")
            assert shell.execute("SELECT k FROM t").fetchall() == [("a",)]  # its snapshot
            await w.run(put("b"))
            assert await trace.checkpoints.get() == "PRAGMA wal_checkpoint(TRUNCATE)"
            async with asyncio.timeout(10):  # a guard: the checkpoint returns at once
                await w.run(put("c"))
            [(timeout,)] = await w.run(read("PRAGMA busy_timeout"))
            assert timeout == 20000, "restored for the writes"
            assert shell.execute("SELECT k FROM t").fetchall() == [("a",)]
            shell.execute("COMMIT")  # before the writer's close, which waits for readers
        assert stored(db).keys() == {"a", "b", "c"}
    finally:
        shell.close()
