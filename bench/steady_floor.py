"""Scenario 3's floor: the steady state's firings, written ahead, with no schedd around them.

N "schedules" of 1 s, each due at a fixed delay into every second, the delay schedd's own default
jitter gives a schedule of that name (``stable_jitter_ms``, under 100 ms), so the firings of
each second fall in its first 100 ms exactly as the daemon's do. A bare asyncio loop fires
each at its due time (``loop.call_at``, the wall due time mapped once onto the loop's monotonic
clock) and hands a firing row to one writer thread that **group-commits**: it takes every row
pending, inserts them in one transaction (WAL, ``synchronous=FULL``), COMMITs, then takes what
accumulated meanwhile. Nothing decides, plans or encodes, and no firing waits for more than the
COMMIT in progress and its own: the best case of any write-ahead implementation on this disk.

The firing runs in a process of its own, watched from this one as scenario 3 watches the daemon
(a read-only :class:`bench.common.CommitWatch` in another process), over the same window, with
the figures computed by the same code (:func:`bench.steady.commit_figures`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import CommitWatch, wait_until, wall_ms, wall_s
from bench.floors import FIRING_INSERT, FIRINGS_TABLE, open_wal, write_in_groups
from bench.steady import GRACE_MS, commit_figures, window_bounds

#: schedd's default jitter bound for a 1 s interval: a tenth of its period.
JITTER_BOUND_MS = 100

Firing = tuple[str, str, int, int]


def group_commit(n: int, duration_s: float) -> dict[str, Any]:
    """Commit lateness of N every-second firings group-committed by a bare loop and writer,
    over a window of ``duration_s`` whole seconds (see the module)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / "floor.db"
        db = open_wal(path)
        db.execute(FIRINGS_TABLE)  # before the watcher's first read
        db.close()
        start, end = window_bounds(duration_s)
        stop = end + GRACE_MS
        # forked before this process has a thread; the firing warms up until ``start``
        firer = multiprocessing.get_context("fork").Process(target=_fire, args=(path, n, stop))
        firer.start()
        try:
            with CommitWatch(path) as watch:
                wait_until(lambda: wall_ms() >= stop, duration_s + 60, "steady floor window")
            firer.join(timeout=60)
        finally:
            if firer.is_alive():
                firer.kill()
                firer.join()
        if firer.exitcode != 0:
            raise RuntimeError(f"steady floor: the firing process exited {firer.exitcode}")
        return commit_figures(path, watch, n, start, end)


def _fire(path: Path, n: int, stop_ms: int) -> None:
    """The firing process: the loop in the main thread, the writer beside it, until every
    firing due before ``stop_ms`` is committed."""
    pending: queue.SimpleQueue[Firing | None] = queue.SimpleQueue()
    writer = threading.Thread(
        target=write_in_groups, args=(path, pending, _insert_firings), name="writer"
    )
    writer.start()
    try:
        asyncio.run(_timers(n, stop_ms, pending.put))
    finally:
        pending.put(None)
        writer.join()


async def _timers(n: int, stop_ms: int, hand: Callable[[Firing], None]) -> None:
    """Fire schedule ``i`` every second at its delay from the next whole second on, handing
    each firing to the writer, until ``stop_ms``."""
    from schedd.triggers import stable_jitter_ms

    loop = asyncio.get_running_loop()
    offset = loop.time() - wall_s()  # loop seconds at wall second 0
    done = loop.create_future()
    live = [n]

    def fire(i: int, due: int) -> None:
        hand((f"s{i}@{due}", f"s{i}", due, due))
        if due + 1000 < stop_ms:
            loop.call_at((due + 1000) / 1000 + offset, fire, i, due + 1000)
            return
        live[0] -= 1
        if not live[0]:
            done.set_result(None)

    second = (wall_ms() // 1000 + 1) * 1000
    for i in range(n):
        due = second + stable_jitter_ms(f"s{i}", JITTER_BOUND_MS)
        loop.call_at(due / 1000 + offset, fire, i, due)
    await done


def _insert_firings(db: sqlite3.Connection, firings: list[Firing]) -> None:
    db.executemany(FIRING_INSERT, firings)
