"""The machine's own limits, measured in-process in a fresh interpreter each.

Each floor is the bare mechanism schedd is built on, with nothing of schedd around it: what
the daemon could reach if its own code cost nothing. Ratios to these are the honest targets.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import lateness_summary, now_s, request_line, sleep_s


def timer_pulse(n: int) -> dict[str, Any]:
    """N asyncio timers (``loop.call_at``) all due at the same instant: the event loop's rate."""

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        due = loop.time() + 1.0
        late: list[float] = []
        done = loop.create_future()

        def fire() -> None:
            late.append((loop.time() - due) * 1000)
            if len(late) == n:
                done.set_result(loop.time())

        for _ in range(n):
            loop.call_at(due, fire)
        last = await done
        return {"rate": n / max(last - due, 1e-9), **lateness_summary(late)}

    return asyncio.run(main())


#: The instant the floors' firing rows are for (any fixed one will do).
AT_MS = 1_900_000_000_000


#: A firing as bare as it gets: a unique key, its schedule, when it is due.
FIRINGS_TABLE = (
    "CREATE TABLE firings (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
    " schedule TEXT NOT NULL, due_ms INTEGER NOT NULL, state TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL)"
)
#: One row of :data:`FIRINGS_TABLE`: ``(key, schedule, due_ms, created_ms)``.
FIRING_INSERT = (
    "INSERT INTO firings (key, schedule, due_ms, state, created_ms)"
    " VALUES (?, ?, ?, 'committed', ?)"
)


def sqlite_inserts(n: int, batch: int = 5000) -> dict[str, Any]:
    """Rows shaped like a firing, ``batch`` per transaction, WAL + synchronous=FULL (fsync)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        db = open_wal(Path(tmp) / "floor.db")
        db.execute(FIRINGS_TABLE)
        elapsed = _insert(
            db,
            FIRING_INSERT,
            ((f"p{i}@2030-01-01T00:00:00.000Z", f"p{i}", AT_MS, 0) for i in range(n)),
            batch,
        )
        db.close()
    return {"rate": n / elapsed}


def _schedd_store(path: Path) -> sqlite3.Connection:
    """A store with schedd's own schema (its migrations: every table and index) and the one
    payload its rows point to."""
    from schedd.store.schema import MIGRATIONS

    db = open_wal(path)
    for step in MIGRATIONS:
        for stmt in step:
            db.execute(stmt)
    db.execute("INSERT INTO payloads (id, sha256, size, body) VALUES (1, 'x', 2, '{}')")
    return db


def schedd_firings(n: int, batch: int = 500) -> dict[str, Any]:
    """The same rows into schedd's own ``firings`` table (its schema, every index), ``batch``
    per transaction as the dispatcher writes them: what the layout costs, with no Python of
    schedd's around it."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        db = _schedd_store(Path(tmp) / "schedd.db")
        elapsed = _insert(
            db,
            "INSERT INTO firings (key, schedule_id, schedule, scheduled_for_ms, due_ms, state,"
            " attempt, payload_id, lane, created_ms, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, 'committed', 1, 1, 'default', ?, ?)",
            ((f"p{i}@2030-01-01T00:00:00.000Z", i, f"p{i}", *[AT_MS] * 4) for i in range(n)),
            batch,
        )
        db.close()
    return {"rate": n / elapsed}


#: A spec hash as long as schedd's (SHA-256 in hex), computed by nobody.
_SPEC_HASH = "0" * 64
_SCHEDULE_INSERT = (
    "INSERT INTO schedules (name, source, rule, payload_id, spec_hash, task_kind, next_fire_ms,"
    " next_due_ms, paused, created_ms, updated_ms) VALUES (?, ?, ?, 1, ?, 'command', ?, ?, 0, ?, ?)"
)


def schedd_adds(n: int) -> dict[str, Any]:
    """Scenario 4's floor: the ``schedules.add_many`` request lines ``bigstore`` sends (the same
    bytes, built here one request at a time), each decoded with ``json.loads`` and its
    schedules inserted into schedd's own ``schedules`` table in one transaction, with nothing
    of schedd's around it: no validation, no encoding but the rule's ``json.dumps``, no
    croniter (the next-due keys are precomputed, spread as schedd's are).

    Only the decoding and the inserting are timed (``decode_s`` and ``insert_s``): building a
    request is the client's work. It answers whether an add rate is reachable at all on this
    machine by a process that must read and durably store each schedule.
    """
    from bench.bigstore import PER_REQUEST, AddRequests, mixed_next_ms

    decode_s = insert_s = 0.0
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        db = _schedd_store(Path(tmp) / "schedd.db")
        for k, (op, args) in enumerate(AddRequests(n)):
            line = request_line(k, op, args)
            first = k * PER_REQUEST
            due = [mixed_next_ms(i, AT_MS) for i in range(first, min(n, first + PER_REQUEST))]
            t0 = now_s()
            entries = json.loads(line)["args"]["schedules"]
            rows = [
                (e["name"], "api", json.dumps(e["spec"]), _SPEC_HASH, d, d, AT_MS, AT_MS)
                for e, d in zip(entries, due, strict=True)
            ]
            t1 = now_s()
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_SCHEDULE_INSERT, rows)
            db.execute("COMMIT")
            decode_s += t1 - t0
            insert_s += now_s() - t1
        db.close()
    return {
        "n": n,
        "rate": n / (decode_s + insert_s),
        "decode_s": decode_s,
        "insert_s": insert_s,
    }


def commit_latency(seconds: float, rows: int = 20, every_s: float = 0.02) -> dict[str, Any]:
    """How long one COMMIT of ``rows`` firing-sized rows takes on this disk, at the cadence of
    the steady state (about 50 batches a second), over ``seconds``: its tail is the tail any
    write-ahead firing waits for, once for its own batch and often once for the one before."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        db = open_wal(Path(tmp) / "commits.db")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)")
        took: list[float] = []
        end = now_s() + seconds
        while now_s() < end:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO t (key) VALUES (?)", [(f"k{len(took)}-{j}",) for j in range(rows)]
            )
            t0 = now_s()
            db.execute("COMMIT")
            took.append((now_s() - t0) * 1000)
            sleep_s(every_s)
        db.close()
    return {"commits": len(took), **lateness_summary(took)}


def open_wal(path: Path) -> sqlite3.Connection:
    """A connection as schedd's writer has one (WAL, ``synchronous=FULL``: every COMMIT is
    fsynced), in autocommit mode so each floor states its own transactions."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _insert(db: sqlite3.Connection, sql: str, rows: Iterator[tuple[Any, ...]], batch: int) -> float:
    """Seconds to insert ``rows``, ``batch`` per committed transaction."""
    t0 = now_s()
    while chunk := list(itertools.islice(rows, batch)):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(sql, chunk)
        db.execute("COMMIT")
    return now_s() - t0


def spawn(n: int, parallel: int) -> dict[str, Any]:
    """``/bin/true`` with ``parallel`` processes at a time (a new one as soon as one ends), as
    bare as subprocess gets."""
    t0 = now_s()
    running: list[subprocess.Popen[bytes]] = []
    for _ in range(n):
        if len(running) >= parallel:
            running.pop(0).wait()
        running.append(subprocess.Popen(["/bin/true"], close_fds=True))
    for proc in running:
        proc.wait()
    return {"rate": n / (now_s() - t0)}


WORKER = """
import os, sys
r, w = int(sys.argv[1]), int(sys.argv[2])
while True:
    b = os.read(r, 64)
    if not b:
        break
    os.write(w, b)
"""


def pipe_round_trip(n: int, workers: int = 2) -> dict[str, Any]:
    """N small messages echoed by ``workers`` persistent Python processes over pipes.

    The controller keeps every worker busy (one message in flight each), as a pool does.
    """
    return {"rate": n / asyncio.run(_echo(n, workers))}


def _forward(fd: int, queue: asyncio.Queue[bytes]) -> None:
    queue.put_nowait(os.read(fd, 64))


async def _echo(n: int, workers: int) -> float:
    """Seconds to echo ``n`` messages (see :func:`pipe_round_trip`)."""
    loop = asyncio.get_running_loop()
    procs, channels = [], []
    for _ in range(workers):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220 - set-up, before the clock starts
                [sys.executable, "-c", WORKER, str(to_r), str(from_w)],
                pass_fds=(to_r, from_w),
            )
        )
        os.close(to_r)
        os.close(from_w)
        os.set_blocking(from_r, False)
        channels.append((to_w, from_r))
    remaining = n

    replies: list[asyncio.Queue[bytes]] = []
    for _, from_r in channels:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(from_r, _forward, from_r, queue)
        replies.append(queue)

    async def drive(to_w: int, queue: asyncio.Queue[bytes]) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            os.write(to_w, b"run\n")
            await queue.get()

    for (to_w, _), queue in zip(channels, replies, strict=True):  # warm up: started, ready
        os.write(to_w, b"x")
        await queue.get()
    t0 = now_s()
    await asyncio.gather(*(drive(w, q) for (w, _), q in zip(channels, replies, strict=True)))
    elapsed = now_s() - t0
    for (to_w, from_r), proc in zip(channels, procs, strict=True):
        loop.remove_reader(from_r)
        os.close(to_w)
        proc.wait()
        os.close(from_r)
    return elapsed
