"""schedd scenario 3 (steady state): N interval schedules of 1 s, N firings/s, for a while.

The config holds N ``every = "1s"`` schedules with the default jitter (a stable per-schedule
delay of up to 100 ms, so the N firings of each second fall within its first 100 ms, as a user
would get them). What is measured is the **firing**: its decision and write-ahead commit, not
its execution (scenario 2 measures that, and at these rates execution is its bound). So the
task is a long ``sleep`` with ``[workers] max = 1`` and ``overlap = "allow"``: every occurrence
is committed as a firing and waits behind the one that runs, the backlog spilling to the store
beyond ``[dispatch] max_ready``.

Figures, over the firings due in a window of whole seconds that starts 1 s after READY:

* commit lateness — when a read-only watcher (:class:`bench.common.CommitWatch`, 1 ms polls)
  first saw the firing committed, minus its due time (occurrence + jitter): an upper bound by
  the poll interval. A firing seen committed before its due time was early. (The store's
  ``created_ms`` cannot tell: for a dispatched firing it is written as its ``due_ms``.)
* unobserved — firings due in the window that the watcher had not seen committed 1 s after it
  ended, plus occurrences that have no firing at all (should be 0);
* the daemon's CPU (user + system, all threads, not its tasks) over the window as a share of
  one core, and its RSS at the start and the end of the window.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

from bench.common import (
    CommitWatch,
    Daemon,
    config,
    cpu_seconds,
    lateness_summary,
    now_s,
    rss_bytes,
    running,
    wait_until,
    wall_ms,
    workdir,
)
from bench.pulse import BLOCKER

WARMUP_MS = 1000
GRACE_MS = 1000


def interval_schedules(n: int) -> str:
    return "".join(
        f'[schedules.s{i}]\nevery = "1s"\noverlap = "allow"\ncommand = {BLOCKER}\n'
        for i in range(n)
    )


def window_bounds(duration_s: float) -> tuple[int, int]:
    """Wall ms ``[start, end)`` of a window of whole seconds starting at least
    :data:`WARMUP_MS` from now."""
    start = -(-(wall_ms() + WARMUP_MS) // 1000) * 1000
    return start, start + int(duration_s * 1000)


def steady(n: int, duration_s: float) -> dict[str, Any]:
    with workdir("steady") as root:
        daemon = Daemon(root, config(interval_schedules(n), workers=1))
        with running(daemon):
            daemon.start()
            start, end = window_bounds(duration_s)
            with CommitWatch(daemon.db) as watch:
                wait_until(lambda: wall_ms() >= start, 60, "steady window start", every_s=0.005)
                cpu0, t0, rss0 = cpu_seconds(daemon.pid), now_s(), rss_bytes(daemon.pid)
                wait_until(lambda: wall_ms() >= end, duration_s + 60, "steady window end")
                cpu1, t1, rss1 = cpu_seconds(daemon.pid), now_s(), rss_bytes(daemon.pid)
                wait_until(lambda: wall_ms() >= end + GRACE_MS, 60, "steady grace")
            daemon.kill(signal.SIGTERM)  # ends the blocker
        figures = commit_figures(daemon.db, watch, n, start, end)
    return {
        "n": n,
        **figures,
        "cpu_share": (cpu1 - cpu0) / (t1 - t0),
        "rss_start": rss0,
        "rss_end": rss1,
    }


def commit_figures(db: Path, watch: CommitWatch, n: int, start: int, end: int) -> dict[str, Any]:
    """Commit lateness of the firings of ``n`` every-second schedules due in ``[start, end)``,
    as ``watch`` saw them committed to ``db``: the figures of this scenario, and of its floor
    (:mod:`bench.steady_floor`), computed alike."""
    rows = _window(db, start, end)
    commit = [float(c - due) for fid, due in rows if (c := watch.committed_ms(fid)) is not None]
    expected = n * (end - start) // 1000
    return {
        "duration_s": (end - start) / 1000,
        "expected": expected,
        "firings": len(rows),
        "unobserved": expected - len(commit),
        "commit_late": lateness_summary(commit),
        "watch_polls": watch.polls,
    }


def _window(db: Path, start: int, end: int) -> list[tuple[int, int]]:
    """``(id, due_ms)`` of every firing due in ``[start, end)``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT id, due_ms FROM firings WHERE due_ms >= ? AND due_ms < ?",
            (start, end),
        ).fetchall()
    finally:
        conn.close()
