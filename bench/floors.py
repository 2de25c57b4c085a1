"""The machine's own limits, measured in-process in a fresh interpreter each.

Each floor is the bare mechanism schedd is built on, with nothing of schedd around it: what
the daemon could reach if its own code cost nothing. Ratios to these are the honest targets.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import lateness_summary, now_s


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


def sqlite_inserts(n: int, batch: int = 5000) -> dict[str, Any]:
    """Rows shaped like a firing, ``batch`` per transaction, WAL + synchronous=FULL (fsync)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE firings (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
            " schedule TEXT NOT NULL, scheduled_for_ms INTEGER NOT NULL, state TEXT NOT NULL,"
            " created_ms INTEGER NOT NULL)"
        )
        t0 = now_s()
        for start in range(0, n, batch):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO firings (key, schedule, scheduled_for_ms, state, created_ms)"
                " VALUES (?, ?, ?, 'committed', ?)",
                (
                    (f"p{i}@2030-01-01T00:00:00.000Z", f"p{i}", 1_900_000_000_000, 0)
                    for i in range(start, min(n, start + batch))
                ),
            )
            db.execute("COMMIT")
        elapsed = now_s() - t0
        db.close()
    return {"rate": n / elapsed}


def spawn(n: int, parallel: int) -> dict[str, Any]:
    """``/bin/true`` with ``parallel`` processes at a time, as bare as subprocess gets."""
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

    async def main() -> float:
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

        async def drive(to_w: int, from_r: int) -> None:
            nonlocal remaining
            replies: asyncio.Queue[bytes] = asyncio.Queue()
            loop.add_reader(from_r, lambda: replies.put_nowait(os.read(from_r, 64)))
            try:
                while remaining > 0:
                    remaining -= 1
                    os.write(to_w, b"run\n")
                    await replies.get()
            finally:
                loop.remove_reader(from_r)

        for to_w, from_r in channels:  # warm up: the worker is started and ready
            os.write(to_w, b"x")
            while True:
                try:
                    os.read(from_r, 64)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.005)
        t0 = now_s()
        await asyncio.gather(*(drive(w, r) for w, r in channels))
        elapsed = now_s() - t0
        for (to_w, from_r), proc in zip(channels, procs, strict=True):
            os.close(to_w)
            proc.wait()
            os.close(from_r)
        return elapsed

    return {"rate": n / asyncio.run(main())}
