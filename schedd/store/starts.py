"""Runs' rows: a run's start (or whole run) and its end, and the starts written together.

Every run writes a row at its start, beside the running task (:mod:`schedd.attempt`), and most
short runs have ended by the time it is written, so the row carries the whole run
(``Store.start_run``). Written one unit each, those starts were the largest part of what a run
costs the event loop: a unit, a savepoint and two statements per run, each run's SQL run cold
between the loop's other work (49 µs of loop CPU a start in the daemon against 19 µs for the
same statements alone; docs/benchmarks.md, thirteenth session).

So the starts that arrive while one is waiting for the writer join it, a **group**, written as
one unit when the writer reaches it: the firings' transitions and the runs' rows each in one
``executemany``, the run ids given by this writer (the only one: ``max(id) + 1`` onwards, read
in the same transaction). Whether a run is written whole is still asked of each run as its
group is written, as before. Alternating with one unit per start, 30 000 no-op Python runs,
five rounds: 11 to 14 % more runs a second, 5 to 10 % less loop CPU a run.

**A refused start fails alone.** A firing moved meanwhile (an operator cancelled it, say)
makes the group's transitions change fewer rows than it has; the group's statements are then
rolled back to their savepoint and each start written on its own, in a savepoint of its own,
as the single path does, so only the refused start's caller gets its error. A failed
transaction (disk full) fails every start of the group, as it fails every unit of the batch.

**Bounded.** A group holds at most :data:`MAX_GROUP` starts; a run about to start waits while
the open group is full (``Store.room_for_run``), as it waits while the writer has too many
records queued, so neither the group's transaction nor the runs ahead of the writer grow
without bound when the writer is slow. The bound is what a critical lane's firing waits for
behind a batch: with 64, its p99 (100 000 bulk runs draining) was 27 to 37 ms against 11 to 19 ms
with a unit per start; with 16, 14 ms, and the gain above is with 16.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from schedd.model import FiringState
from schedd.record import record
from schedd.store.records import ProcessRef, RunFinish, Ticket
from schedd.store.rows import marks, transition, transition_sql
from schedd.store.writer import Conn

#: Starts written in one unit at most; runs about to start wait while the open group is full.
MAX_GROUP = 16

#: A run's end, as its row stores it: the columns, their values for a running row, and
#: :func:`run_end` for an ended one, so a run written whole and one ended later store the same.
END_COLS = (
    "state",
    "ended_ms",
    "exit_code",
    "signal",
    "reason",
    "output",
    "output_bytes",
    "output_truncated",
)
RUN_FINISH = "UPDATE runs SET {} WHERE id = ? AND state = 'running' RETURNING id".format(
    ", ".join(f"{col} = ?" for col in END_COLS)
)
_START_COLS = ("firing_id", "schedule", "attempt", "pid", "pgid", "proc_start", "started_ms")
#: A run's row, its id given by this writer (see the module).
_RUN_INSERT = "INSERT INTO runs (id, {}) VALUES ({})".format(
    ", ".join(_START_COLS + END_COLS), marks(1 + len(_START_COLS) + len(END_COLS))
)
_RUNNING = ("running", None, None, None, None, None, 0, 0)
#: What a run's end sets on its firing besides the state: a crash counts, a retry keeps its time.
_END_SET = ", crashes = crashes + ?, retry_at_ms = ?"
#: The firing's move when its run starts, or ends before its start is written (``via``).
_TO_RUNNING = transition_sql(FiringState.RUNNING)
_ENDED_VIA_RUNNING = transition_sql(FiringState.RUNNING, _END_SET)


def run_end(finish: RunFinish) -> tuple[Any, ...]:
    return (
        finish.outcome,
        finish.ended_ms,
        finish.exit_code,
        finish.signal,
        finish.reason,
        finish.output,
        finish.output_bytes,
        int(finish.output_truncated),
    )


def _end_args(finish: RunFinish) -> tuple[Any, ...]:
    """:func:`end_firing`'s arguments, as ``_ENDED_VIA_RUNNING`` binds them (id last)."""
    return (
        finish.firing_state.value,
        finish.firing_reason or finish.reason,
        finish.ended_ms,
        int(finish.crashed),
        finish.retry_at_ms,
    )


async def end_firing(conn: Conn, finish: RunFinish, *, via: FiringState | None = None) -> None:
    """The firing's next state after its run (``via``: straight from ``committed``, for a run
    written whole)."""
    _, reason, ended_ms, crashed, retry_at_ms = _end_args(finish)
    await transition(
        conn,
        finish.firing_id,
        finish.firing_state,
        now_ms=ended_ms,
        reason=reason,
        set_sql=_END_SET,
        set_args=(crashed, retry_at_ms),
        via=via,
    )


@record
class _Start:
    ticket: Ticket
    process: ProcessRef | None
    now_ms: int
    ended: Callable[[], RunFinish | None]
    #: The run's id once its group is committed, or the reason it is not.
    done: asyncio.Future[int]


class _Group:
    __slots__ = ("starts", "taken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.starts: list[_Start] = []
        #: Resolved once the writer takes the group: runs waiting for room may start.
        self.taken: asyncio.Future[None] = loop.create_future()


Write = Callable[[Callable[[Conn], Awaitable[list[int | Exception]]]], Awaitable[list[Any]]]


class StartGroups:
    """The open group of starts, and the writes of the groups taken (see the module)."""

    def __init__(self, write: Write) -> None:
        """``write``: runs a unit in the writer, behind the work (``Store._write(...,
        behind=True)``)."""
        self._write = write
        self._open: _Group | None = None
        #: The groups' writes in flight, referenced until done.
        self._writing: set[asyncio.Task[None]] = set()

    async def room(self) -> None:
        """Return once the open group has room for one more start."""
        while self._open is not None and len(self._open.starts) >= MAX_GROUP:
            await asyncio.shield(self._open.taken)

    async def start(
        self,
        ticket: Ticket,
        process: ProcessRef | None,
        now_ms: int,
        ended: Callable[[], RunFinish | None],
    ) -> int:
        """Write the run's start with its group; its run id (``Store.start_run``)."""
        loop = asyncio.get_running_loop()
        group = self._open
        if group is None:
            group = self._open = _Group(loop)
            writing = loop.create_task(self._write_group(group))
            self._writing.add(writing)
            writing.add_done_callback(self._writing.discard)
        start = _Start(ticket, process, now_ms, ended, loop.create_future())
        group.starts.append(start)
        # Shielded: the run's id and row do not depend on who waits for them.
        return await asyncio.shield(start.done)

    def _take(self, group: _Group) -> list[_Start]:
        """The writer has reached the group: it is closed, later starts open another."""
        if self._open is group:
            self._open = None
        if not group.taken.done():
            group.taken.set_result(None)
        return group.starts

    async def _write_group(self, group: _Group) -> None:
        try:
            outcomes = await self._write(lambda conn: _write_starts(conn, self._take(group)))
        except Exception as exc:  # noqa: BLE001 - the transaction failed: every start did
            self._take(group)
            outcomes = [exc] * len(group.starts)
        for start, outcome in zip(group.starts, outcomes, strict=True):
            if start.done.done():
                continue
            if isinstance(outcome, Exception):
                start.done.set_exception(outcome)
            else:
                start.done.set_result(outcome)


async def _write_starts(conn: Conn, starts: Sequence[_Start]) -> list[int | Exception]:
    """Each start's run id, or why it was refused (see the module)."""
    finishes = [start.ended() for start in starts]
    [(last,)] = await conn.execute_fetchall("SELECT max(id) FROM runs")
    first = (last or 0) + 1
    await conn.execute("SAVEPOINT starts")
    if await _all_at_once(conn, starts, finishes, first):
        await conn.execute("RELEASE starts")
        return list(range(first, first + len(starts)))
    await conn.execute("ROLLBACK TO starts")
    await conn.execute("RELEASE starts")
    return [
        await _one_alone(conn, first + i, start, finish)
        for i, (start, finish) in enumerate(zip(starts, finishes, strict=True))
    ]


async def _all_at_once(
    conn: Conn, starts: Sequence[_Start], finishes: Sequence[RunFinish | None], first: int
) -> bool:
    """Write every start in three statements; False if a firing refused its move."""
    running, ended, runs = [], [], []
    for i, (start, finish) in enumerate(zip(starts, finishes, strict=True)):
        fid = start.ticket.firing_id
        if finish is None:
            running.append((FiringState.RUNNING.value, None, start.now_ms, fid))
        else:
            ended.append((*_end_args(finish), fid))
        runs.append(_run_row(first + i, start, finish))
    moved = await conn.executemany(_TO_RUNNING, running) if running else 0
    moved += await conn.executemany(_ENDED_VIA_RUNNING, ended) if ended else 0
    if moved != len(starts):
        return False
    await conn.executemany(_RUN_INSERT, runs)
    return True


async def _one_alone(
    conn: Conn, run_id: int, start: _Start, finish: RunFinish | None
) -> int | Exception:
    """Write one start in a savepoint of its own as run ``run_id``; that id, or why it was
    refused (a refused start leaves its id unused)."""
    await conn.execute("SAVEPOINT start")
    try:
        fid = start.ticket.firing_id
        if finish is None:
            await transition(conn, fid, FiringState.RUNNING, now_ms=start.now_ms)
        else:
            await end_firing(conn, finish, via=FiringState.RUNNING)
        await conn.execute(_RUN_INSERT, _run_row(run_id, start, finish))
    except Exception as exc:  # noqa: BLE001 - reported to this start's caller alone
        await conn.execute("ROLLBACK TO start")
        await conn.execute("RELEASE start")
        return exc
    await conn.execute("RELEASE start")
    return run_id


def _run_row(run_id: int, start: _Start, finish: RunFinish | None) -> tuple[Any, ...]:
    process = start.process
    return (
        run_id,
        start.ticket.firing_id,
        start.ticket.schedule,
        start.ticket.attempt,
        process.pid if process else None,
        process.pgid if process else None,
        process.start_ticks if process else None,
        start.now_ms,
        *(_RUNNING if finish is None else run_end(finish)),
    )
