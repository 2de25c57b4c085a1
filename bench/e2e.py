"""schedd scenario 2 (end to end): N no-op tasks from commit to recorded result.

The firings come from N ``at`` schedules due together (the pulse path, so the admin socket's
submit rate does not bound the figure); the rate is N over the span from the first run's start
to the last run's end, read from the ``runs`` table once ``status`` shows every run finished.
Python tasks run ``os:getpid`` (nothing to import, nothing to do) in the pool with 2 workers;
command tasks run ``/bin/true`` with 2 at a time, against the matching floors.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from bench.common import Daemon, config, lateness_summary, running, wait_until, wall_ms, workdir
from bench.pulse import BLOCKER, at_schedules

TASKS = {
    "python": 'python = "os:getpid"',
    "command": 'command = ["/bin/true"]',
}


def end_to_end(n: int, kind: str, lead_s: float, workers: int = 2) -> dict[str, Any]:
    with workdir("e2e") as root:
        due = wall_ms() + int(lead_s * 1000)
        schedules = at_schedules(n, due).replace(f"command = {BLOCKER}", TASKS[kind])
        daemon = Daemon(root, config(schedules, workers=workers))
        with running(daemon):
            daemon.start(timeout_s=lead_s + 300)
            wait_until(
                lambda: daemon.call("status")["firings"]["runs_finished"] >= n,
                600,
                f"{n} {kind} runs finished",
                every_s=0.1,
            )
            daemon.kill()
        db = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)
        try:
            first, last, ok = db.execute(
                "SELECT min(started_ms), max(ended_ms), sum(state = 'succeeded') FROM runs"
            ).fetchone()
            start_late = [
                float(r[0])
                for r in db.execute(
                    "SELECT r.started_ms - f.scheduled_for_ms FROM runs r"
                    " JOIN firings f ON f.id = r.firing_id"
                )
            ]
        finally:
            db.close()
    return {
        "n": n,
        "kind": kind,
        "succeeded": ok,
        "rate": n / max((last - first) / 1000, 1e-3),
        "span_s": (last - first) / 1000,
        "start_late": lateness_summary(start_late),
    }
