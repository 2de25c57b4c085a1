"""The machine's own limits, measured in-process in a fresh interpreter each.

Each floor is the bare mechanism schedd is built on, with nothing of schedd around it: what
the daemon could reach if its own code cost nothing. Ratios to these are the honest targets.
Two more, beside the pipe round trip, tell end to end's miss apart: the round trip with each
run's rows stored beside it (what durability costs a pool), and with everything DESIGN asks of
a run done by the leanest loop we could write (what the protocol, the worker program, the log
lines and the rows cost together, before any of the daemon's own structure).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import queue
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bench.common import lateness_summary, now_s, request_line, sleep_s
from schedd.logs import setup_logging
from schedd.workers import pyworker
from schedd.workers.procs import process_identity
from schedd.workers.spawn import READ_CHUNK

T = TypeVar("T")


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
AT = "2030-03-17T17:46:40.000Z"


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


#: A dispatched firing's row in :func:`dispatch_duties`: eight values bound, the rest fixed.
_FIRING_VALUES = "(?, ?, ?, ?, ?, 'committed', 1, ?, 'default', ?, ?)"


def dispatch_duties(n: int, batch: int = 500) -> dict[str, Any]:
    """Scenario 1's duties floor: what DESIGN asks of dispatching each firing of a pulse, done
    with the leanest Python we could write around schedd's own tables. N one-shot schedules
    due at one instant are stored beforehand (their rule as schedd stores it; not timed).
    Then, ``batch`` per transaction as the dispatcher takes them: each schedule's rule and
    marks read by id, its rule decoded (``json.loads``, once per distinct text, as schedd
    caches it), checked due and within its grace, its firing's key made from its name and
    instant, its high-water mark moved and its firing inserted (``ON CONFLICT DO NOTHING`` on
    the key: idempotent) in that transaction, COMMIT (write-ahead: only then could the firings
    be handed on). No timer, planner objects, tickets or runner."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        db = _schedd_store(Path(tmp) / "schedd.db")
        rule = _stored_rule(f'at = "{AT}"\ncommand = ["/bin/sleep", "3600"]', Path(tmp))
        _insert(
            db,
            _SCHEDULE_INSERT,
            ((f"p{i}", "api", rule, _SPEC_HASH, AT_MS, AT_MS, AT_MS, AT_MS) for i in range(n)),
            5000,
        )
        decoded: dict[str, Any] = {}  # by text: a pulse's schedules share a few rules
        t0 = now_s()
        for first in range(1, n + 1, batch):
            ids = list(range(first, min(n + 1, first + batch)))
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(
                "SELECT id, name, rule, next_fire_ms, next_due_ms, payload_id FROM schedules"
                f" WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
            marks: list[Any] = []
            firings: list[Any] = []
            for sid, name, text, fire_ms, due_ms, payload_id in rows:
                rule_ = decoded.get(text) or decoded.setdefault(text, json.loads(text))
                if due_ms > AT_MS + 1 or AT_MS - due_ms > rule_["policies"]["misfire_grace_ms"]:
                    continue
                marks += (sid, fire_ms, None, None)
                firings += (f"{name}@{AT}", sid, name, fire_ms, due_ms, payload_id, due_ms, due_ms)
            db.execute(
                "UPDATE schedules SET fired_through_ms = v.column2, next_fire_ms = v.column3,"
                " next_due_ms = v.column4 FROM (VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * (len(marks) // 4))
                + ") AS v WHERE schedules.id = v.column1",
                marks,
            )
            db.execute(
                "INSERT INTO firings (key, schedule_id, schedule, scheduled_for_ms, due_ms,"
                " state, attempt, payload_id, lane, created_ms, updated_ms) VALUES "
                + ", ".join([_FIRING_VALUES] * (len(firings) // 8))
                + " ON CONFLICT(key) DO NOTHING",
                firings,
            )
            db.execute("COMMIT")
        elapsed = now_s() - t0
        [(stored,)] = db.execute("SELECT count(*) FROM firings").fetchall()
        db.close()
    assert stored == n, f"{stored} of {n} firings stored"
    return {"rate": n / elapsed}


def _stored_rule(schedule: str, tmp: Path) -> str:
    """The rule column schedd stores for a schedule of one config table's body."""
    from schedd.config import parse_config
    from schedd.store.rows import spec_text

    text = f'[daemon]\nstate_dir = "{tmp}"\n[schedules.s]\n{schedule}\n'
    config = parse_config(text, base_dir=tmp)
    return spec_text(config.schedules[0]).rule


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
    started, ended = asyncio.run(_echo(n, workers, lambda _: None))
    return {"rate": n / (ended - started)}


#: A run's rows as schedd writes a short run (its start and end in one row, DESIGN §2), and its
#: firing's final state.
RUN_INSERT = (
    "INSERT INTO runs (firing_id, schedule, attempt, pid, pgid, proc_start, started_ms, state,"
    " ended_ms, exit_code, signal, reason, output, output_bytes, output_truncated)"
    " VALUES (?, ?, 1, 1, 1, 1, ?, 'succeeded', ?, NULL, NULL, NULL, x'', 0, 0)"
)
FIRING_END = (
    "UPDATE firings SET state = 'succeeded', reason = NULL, updated_ms = ?, retry_at_ms = NULL"
    " WHERE id = ? AND state = 'committed'"
)
_FIRING_ROW = (
    "INSERT INTO firings (id, key, schedule_id, schedule, scheduled_for_ms, due_ms, state, attempt,"
    " payload_id, lane, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 'committed', 1, 1,"
    " 'default', ?, ?)"
)


def pipe_with_rows(n: int, workers: int = 2) -> dict[str, Any]:
    """The round trip with each run's rows stored beside it (:func:`_rows_stored_beside`): the
    best case of any pool in one process that records its runs durably, as DESIGN §2 asks."""
    return _rows_stored_beside(n, lambda _, stored: asyncio.run(_echo(n, workers, stored))[0])


def pool_duties(n: int, workers: int = 2) -> dict[str, Any]:
    """What DESIGN asks of every Python run, done by the leanest loop we could write, with
    nothing else of schedd around it: schedd's own worker program (``pyworker.py``, calling
    ``os:getpid``), the call built and framed as the pool frames it and the answer read back,
    a line at each run's start and end at ``info`` through schedd's log handler into a file,
    and each run's rows stored beside it as in :func:`pipe_with_rows`. No tickets, lanes,
    supervision, retries, metrics or tasks per run."""

    def runs(tmp: Path, stored: Callable[[int], None]) -> float:
        with open(tmp / "schedd.log", "w") as log_file:
            setup_logging("info", "text", log_file)
            return asyncio.run(_duties(n, workers, stored))

    return _rows_stored_beside(n, runs)


def spawn_duties(n: int, parallel: int = 2) -> dict[str, Any]:
    """What DESIGN asks of every command run, done by the leanest loop we could write, with
    nothing else of schedd around it: ``/bin/true`` ``parallel`` at a time, each the leader of
    a session of its own (so its group can be killed), stdin from ``/dev/null``, stdout and
    stderr on one pipe read from the loop to its end, its environment the allow-list's
    variables and the firing's, its exit watched by a pidfd on the loop, its identity read from
    ``/proc`` and appended to schedd's spawn journal (what recovery needs to kill the right
    group after a crash), reaped with ``wait4``, a line at its start and end at ``info`` through
    schedd's log handler into a file, and its rows stored beside it as in
    :func:`pipe_with_rows`. No tickets, lanes, supervision, timeouts, retries, metrics or
    tasks per run."""

    def runs(tmp: Path, stored: Callable[[int], None]) -> float:
        with open(tmp / "schedd.log", "w") as log_file:
            setup_logging("info", "text", log_file)
            return asyncio.run(_command_duties(n, parallel, tmp / "spawns", stored))

    return _rows_stored_beside(n, runs)


def _rows_stored_beside(
    n: int, runs: Callable[[Path, Callable[[int], None]], float]
) -> dict[str, Any]:
    """The rate of ``runs(work directory, stored)``, each of its N runs stored as it ends.

    N firings are committed beforehand into schedd's own tables (not timed: the round trip
    floor does not dispatch either). ``stored(i)`` hands firing ``i``'s run (the run row and
    the firing's final state) to a writer thread that group-commits (every run pending in one
    transaction, WAL, ``synchronous=FULL``, then what came meanwhile); SQLite releases the GIL
    while it works, so the writing overlaps the runs as far as two cores allow. Timed from
    when ``runs`` says it started until the last run is committed."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / "schedd.db"
        db = _schedd_store(path)
        _insert(db, _FIRING_ROW, ((i, f"p{i}@x", i, f"p{i}", *[AT_MS] * 4) for i in range(n)), 500)
        db.close()
        pending: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        writer = threading.Thread(target=write_in_groups, args=(path, pending, _store_runs))
        writer.start()
        try:
            started = runs(Path(tmp), pending.put)
        finally:
            pending.put(None)
            writer.join()
        return {"rate": n / (now_s() - started)}


async def _duties(n: int, workers: int, stored: Callable[[int], None]) -> float:
    """When the first call of :func:`pool_duties` was sent (its workers started before)."""
    from schedd.workers.messages import PythonCall, parse_done, parse_ready, run_message

    log = logging.getLogger("schedd.attempt")
    loop = asyncio.get_running_loop()
    remaining, procs, channels = n, [], []
    for _ in range(workers):
        ours, theirs = socket.socketpair()
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220 - set-up, before the clock starts
                [sys.executable, "-u", pyworker.__file__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdout=subprocess.DEVNULL,
            )
        )
        theirs.close()
        ours.setblocking(False)
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reader = pyworker.FrameReader()
        loop.add_reader(ours.fileno(), _answers, ours, reader, inbox)
        channels.append((ours, inbox))

    async def drive(sock: socket.socket, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            i = remaining
            key, env = _firing_vars(i)
            context = {
                "idempotency_key": key,
                "scheduled_for": AT,
                "attempt": 1,
                "schedule": f"p{i}",
            }
            call = PythonCall("os:getpid", (), {}, context, env, None, 5000)
            frame = pyworker.encode(run_message(i, call))
            log.info("run started: schedule=p%d key=%s attempt=1", i, key, extra={"key": key})
            sock.send(frame)
            parse_done(await inbox.get(), i)
            log.info(
                "run finished: schedule=p%d key=%s outcome=succeeded", i, key, extra={"key": key}
            )
            stored(i)

    for _, inbox in channels:
        parse_ready(await inbox.get())
    started = now_s()
    await asyncio.gather(*(drive(sock, inbox) for sock, inbox in channels))
    for (sock, _), proc in zip(channels, procs, strict=True):
        loop.remove_reader(sock.fileno())
        sock.close()
        proc.wait()
    return started


async def _command_duties(
    n: int, parallel: int, journal_path: Path, stored: Callable[[int], None]
) -> float:
    """When the first command of :func:`spawn_duties` was spawned."""
    from schedd.config.sections import WorkersConfig
    from schedd.spawnlog import SpawnJournal
    from schedd.workers.environment import build_env

    log = logging.getLogger("schedd.attempt")
    loop = asyncio.get_running_loop()
    allow = WorkersConfig().env_allow
    journal = SpawnJournal(journal_path)
    journal.start()
    remaining = n

    async def drive() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            i = remaining
            key, firing = _firing_vars(i)
            env = build_env(inherited=os.environ, allow=allow, task_env={}, firing=firing)
            proc = subprocess.Popen(  # noqa: ASYNC220 - blocks the loop as schedd's spawn does
                ["/bin/true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
            assert proc.stdout is not None
            pidfd, out = os.pidfd_open(proc.pid), proc.stdout.fileno()
            os.set_blocking(out, False)
            ident = process_identity(proc.pid)
            assert ident is not None, "unreaped: its /proc entry stays"
            journal.spawned(ident)
            log.info("run started: schedule=p%d key=%s attempt=1", i, key, extra={"key": key})
            exited, eof = loop.create_future(), loop.create_future()
            loop.add_reader(pidfd, _resolve, loop, pidfd, exited)
            loop.add_reader(out, _read_to_end, loop, out, eof)
            await exited
            await eof
            os.wait4(proc.pid, 0)  # noqa: ASYNC222 - it has exited: reaping does not block
            os.close(pidfd)
            proc.stdout.close()
            log.info(
                "run finished: schedule=p%d key=%s outcome=succeeded", i, key, extra={"key": key}
            )
            stored(i)
            journal.recorded(ident)  # as once its row is committed (here: once handed over)

    started = now_s()
    await asyncio.gather(*(drive() for _ in range(parallel)))
    journal.close()
    return started


def _resolve(loop: asyncio.AbstractEventLoop, fd: int, done: asyncio.Future[None]) -> None:
    loop.remove_reader(fd)
    done.set_result(None)


def _read_to_end(loop: asyncio.AbstractEventLoop, fd: int, eof: asyncio.Future[None]) -> None:
    """Read what the pipe holds (the output would go to the run's tail); resolve at its end."""
    while True:
        try:
            if os.read(fd, READ_CHUNK):
                continue
        except BlockingIOError:
            return
        _resolve(loop, fd, eof)
        return


def _firing_vars(i: int) -> tuple[str, dict[str, str]]:
    """Firing ``i``'s key and the variables every run of it gets, as schedd sets them."""
    key = f"p{i}@x"
    return key, {
        "SCHEDD_IDEMPOTENCY_KEY": key,
        "SCHEDD_SCHEDULED_FOR": AT,
        "SCHEDD_ATTEMPT": "1",
        "SCHEDD_SCHEDULE": f"p{i}",
    }


def _answers(
    sock: socket.socket, reader: pyworker.FrameReader, inbox: asyncio.Queue[dict[str, Any]]
) -> None:
    data = sock.recv(pyworker.READ_CHUNK)
    for message in reader.feed(data) if data else [{"type": "end of file"}]:
        inbox.put_nowait(message)


def _store_runs(db: sqlite3.Connection, runs: list[int]) -> None:
    """Firing ``i``'s run, as :data:`RUN_INSERT` and :data:`FIRING_END` store it, for each."""
    db.executemany(RUN_INSERT, ((i, f"p{i}", AT_MS, AT_MS) for i in runs))
    db.executemany(FIRING_END, ((AT_MS, i) for i in runs))


def write_in_groups(
    path: Path,
    pending: queue.SimpleQueue[T | None],
    write: Callable[[sqlite3.Connection, list[T]], None],
) -> None:
    """Group commit: every item pending, ``write`` in one transaction, COMMIT; then what came
    meanwhile. ``None`` (handed last) ends it once the items before it are committed."""
    db = open_wal(path)
    try:
        while True:
            batch = [pending.get()]
            while not pending.empty():
                batch.append(pending.get_nowait())
            items = [item for item in batch if item is not None]
            if items:
                db.execute("BEGIN IMMEDIATE")
                write(db, items)
                db.execute("COMMIT")
            if len(items) < len(batch):
                return
    finally:
        db.close()


def _forward(fd: int, inbox: asyncio.Queue[bytes]) -> None:
    inbox.put_nowait(os.read(fd, 64))


async def _echo(n: int, workers: int, answered: Callable[[int], None]) -> tuple[float, float]:
    """When echoing ``n`` messages (see :func:`pipe_round_trip`) started and ended, the workers
    started before; ``answered`` is called with each message's number as its echo arrives."""
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
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(from_r, _forward, from_r, inbox)
        replies.append(inbox)

    async def drive(to_w: int, inbox: asyncio.Queue[bytes]) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            run = remaining
            os.write(to_w, b"run\n")
            await inbox.get()
            answered(run)

    for (to_w, _), inbox in zip(channels, replies, strict=True):  # warm up: started, ready
        os.write(to_w, b"x")
        await inbox.get()
    started = now_s()
    await asyncio.gather(*(drive(w, q) for (w, _), q in zip(channels, replies, strict=True)))
    ended = now_s()
    for (to_w, from_r), proc in zip(channels, procs, strict=True):
        loop.remove_reader(from_r)
        os.close(to_w)
        proc.wait()
        os.close(from_r)
    return started, ended
