"""schedd scenario 8 (lanes under load): a critical every-second schedule while a bulk pulse and
an outage's catch-up backlog drain.

The claim (issue 5): a critical-lane schedule firing every second stays on time (lateness p99
< 50 ms) while 100 000 bulk firings and a catch-up backlog drain. The config has a
``critical`` lane with one reserved slot and a ``bulk`` lane; N one-shot ``bulk`` schedules are
due together at T (the pulse), M more are an hour in the past (missed: each a catch-up firing),
and ``critical`` fires every second from before T to T + D. Every task is ``os:getpid`` in the
Python pool, so the bulk work drains at the pool's rate and is still draining during the whole
window. Lateness is ``started_ms - scheduled_for_ms`` of each critical run in [T, T + D] (jitter
0), from the ``runs`` table; the JSON also carries what was drained meanwhile and the ready
queues' peak (bounded by ``[dispatch] max_ready``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from bench.common import (
    Daemon,
    config,
    lateness_summary,
    rfc3339_ms,
    running,
    sleep_s,
    wall_ms,
    workdir,
)

TASK = 'python = "os:getpid"'
MAX_READY = 10_000


def schedules(n_bulk: int, n_backlog: int, due_ms: int) -> str:
    critical = f'[schedules.critical]\nevery = "1s"\njitter = "0s"\nlane = "critical"\n{TASK}\n'
    at, past = rfc3339_ms(due_ms), rfc3339_ms(due_ms - 3_600_000)
    bulk = "".join(f'[schedules.b{i}]\nat = "{at}"\nlane = "bulk"\n{TASK}\n' for i in range(n_bulk))
    backlog = "".join(
        f'[schedules.m{i}]\nat = "{past}"\nlane = "bulk"\n{TASK}\n' for i in range(n_backlog)
    )
    return critical + bulk + backlog


def lanes_under_load(n_bulk: int, n_backlog: int, window_s: float, lead_s: float) -> dict[str, Any]:
    extra = (
        f"[dispatch]\nmax_ready = {MAX_READY}\n\n[catchup]\nrate = 50\n\n"
        "[lanes.critical]\nreserved = 1\n\n[lanes.bulk]\nweight = 1\n"
    )
    with workdir("lanes") as root:
        due = wall_ms() + int(lead_s * 1000)
        daemon = Daemon(root, config(schedules(n_bulk, n_backlog, due), workers=4, extra=extra))
        with running(daemon):
            daemon.start(timeout_s=lead_s + 300)
            start_margin_ms = due - wall_ms()
            sleep_s(max(0.0, (due - wall_ms()) / 1000 + window_s + 1))
            status = daemon.call("status")
            daemon.kill()
        db = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT f.scheduled_for_ms - ?, r.started_ms - f.scheduled_for_ms FROM runs r"
                " JOIN firings f ON f.id = r.firing_id"
                " WHERE f.schedule = 'critical' AND f.scheduled_for_ms BETWEEN ? AND ?",
                (due, due, due + int(window_s * 1000)),
            ).fetchall()
            late = [float(r[1]) for r in rows]
            worst = sorted(rows, key=lambda r: -r[1])[:3]
            bulk_runs, backlog_runs = db.execute(
                "SELECT sum(f.catchup = 0), sum(f.catchup = 1) FROM runs r"
                " JOIN firings f ON f.id = r.firing_id WHERE f.lane = 'bulk'"
            ).fetchone()
        finally:
            db.close()
    return {
        "n_bulk": n_bulk,
        "n_backlog": n_backlog,
        "window_s": window_s,
        "start_margin_ms": start_margin_ms,
        "critical_runs": len(late),
        "critical_late": lateness_summary(late),
        #: (ms after T, ms late) of the three latest critical runs: is it the pulse instant?
        "critical_worst": worst,
        "early": sum(1 for x in late if x < 0),
        "bulk_runs": bulk_runs or 0,
        "backlog_runs": backlog_runs or 0,
        "ready_peak": status["queue"]["peak"],
        "max_ready": MAX_READY,
    }
