"""schedd scenario 1 (pulse) with 6 (status latency during it): N one-shots due together.

Driven through the real interfaces: the daemon starts with no schedules, N ``at`` schedules for
one instant T are added through the admin socket (``schedules.add_many``, as bigstore builds its
store), and T arrives. What is measured is the
**write-ahead commit**: every firing in the store, ``committed``, before anything runs. To keep
execution out of that figure the task is a long ``sleep`` with ``[workers] max = 1``: one runs,
every other firing stays committed (scenario 2 measures execution; scenario 7 recovery).

Figures:

* ``commit_s`` — from T until ``status`` shows ``firings.committed_total`` = N, polled every
  20 ms on a new connection each time (each poll is also a sample of scenario 6).
* commit lateness — each increment of ``committed_total`` counts that many firings as committed
  when it was observed: an upper bound by the poll interval.
* recovery (scenario 7) — the same store is then SIGKILLed with N-1 firings committed and one
  running, and restarted: spawn to READY. The config has no schedules, so this is the store's
  recovery alone (a config of N schedules would add its parse, which 4 measures).
* decision lateness — ``created_ms - scheduled_for_ms`` from the store (read-only, after): when
  the dispatcher decided, by its own wall clock, that the firing was due; < 0 would be early.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from typing import Any

from bench.bigstore import CONNECTIONS, WINDOW, AddRequests
from bench.common import (
    Daemon,
    config,
    lateness_summary,
    now_s,
    percentile,
    pipeline,
    rfc3339_ms,
    rss_bytes,
    running,
    sleep_s,
    wall_ms,
    workdir,
)

#: The task that holds the one worker slot, so firings stay committed (and its TOML text).
BLOCKER_ARGV = ["/bin/sleep", "3600"]
BLOCKER = json.dumps(BLOCKER_ARGV)
FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01


def at_schedules(n: int, at_ms: int, command: str = BLOCKER) -> str:
    at = rfc3339_ms(at_ms)
    return "".join(f'[schedules.p{i}]\nat = "{at}"\ncommand = {command}\n' for i in range(n))


def pulse(n: int, lead_s: float) -> dict[str, Any]:
    """One pulse on a fresh store; ``lead_s`` must cover start-up and adding N schedules."""
    with workdir("pulse") as root:
        due = wall_ms() + int(lead_s * 1000)
        at = {"at": rfc3339_ms(due), "command": BLOCKER_ARGV}
        daemon = Daemon(root, config(workers=1))
        with running(daemon):
            daemon.start()
            pipeline(daemon.socket, AddRequests(n, lambda i: at), CONNECTIONS, WINDOW)
            margin_ms = due - wall_ms()
            if margin_ms <= 0:
                raise RuntimeError(f"pulse of {n}: adding ended {-margin_ms} ms after it was due")
            status_ms: list[float] = []
            commit_late: list[float] = []
            seen = 0
            while seen < n:
                t0 = now_s()
                st = daemon.call("status")
                status_ms.append((now_s() - t0) * 1000)
                observed = wall_ms()
                total = st["firings"]["committed_total"]
                if total > seen:
                    commit_late.extend([float(observed - due)] * (total - seen))
                    seen = total
                if observed - due > 600_000:
                    raise TimeoutError(f"pulse of {n}: only {seen} committed after 10 min")
                sleep_s(0.02)
            commit_s = (commit_late[-1]) / 1000
            rss = rss_bytes(daemon.pid)
            # scenario 7 on the same store: N-1 committed, one running, then SIGKILL
            daemon.kill()
            recovery_s = daemon.start(timeout_s=600)
            unfinished = daemon.call("status")["firings"]["unfinished"]
            daemon.kill(signal.SIGTERM)  # ends the blocker the recovery started again
        rows = _firings(daemon)
    decision = [float(r[0]) for r in rows]
    during = status_ms
    return {
        "n": n,
        "stored": len(rows),
        "lost": n - len(rows),
        "start_margin_ms": margin_ms,
        "commit_s": commit_s,
        "rate": n / max(commit_s, 1e-3),
        "commit_late": lateness_summary(commit_late),
        "decision_late": lateness_summary(decision),
        "early": sum(1 for x in decision if x < 0),
        "status_p50_ms": percentile(during, 50),
        "status_p99_ms": percentile(during, 99),
        "status_max_ms": max(during),
        "status_samples": len(during),
        "rss": rss,
        "recovery_ready_s": recovery_s,
        "recovery_unfinished": unfinished,
    }


def _firings(daemon: Daemon) -> list[tuple[int, str]]:
    db = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)
    try:
        return db.execute("SELECT created_ms - scheduled_for_ms, state FROM firings").fetchall()
    finally:
        db.close()
