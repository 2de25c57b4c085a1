"""Poison tasks against the real daemon: quarantined after exactly two crashes, while the rest
of the schedules keep firing on time, and whatever happens to the daemon in between.

Timing is read from the store after the daemon stopped (each run's start against its firing's
due time), never measured with sleeps.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from schedd import failpoints
from tests.integration.conftest import Daemon, base_config

REPO = Path(__file__).resolve().parents[2]
PAST = "2026-01-01T00:00:00Z"
PULSE = """
[schedules.pulse]
every = "200ms"
jitter = "0s"
command = ["true"]
"""


def quarantined(d: Daemon, key: str) -> dict[str, Any]:
    result = d.call("wait", key=key, states=["quarantined", "dead", "succeeded"], timeout_ms=60_000)
    assert result["done"], d.logs()
    firing = result["firing"]
    assert firing["state"] == "quarantined", (firing, d.logs())
    return firing


def store_rows(d: Daemon, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{d.root / 'state' / 'schedd.db'}?mode=ro", uri=True) as db:
        return db.execute(sql, args).fetchall()


def lateness_ms(d: Daemon, schedule: str) -> list[int]:
    rows = store_rows(
        d,
        "SELECT r.started_ms - f.due_ms FROM runs r JOIN firings f ON f.id = r.firing_id"
        " WHERE f.schedule = ? ORDER BY r.id",
        schedule,
    )
    return [int(r[0]) for r in rows]


def test_a_segfaulting_python_task_runs_twice_then_is_quarantined_while_others_fire_on_time(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(
        base_config(
            f"""
[schedules.poison]
at = "{PAST}"
python = "tests.pytasks:segfault"
[schedules.poison.retry]
max_attempts = 5
base = "50ms"
max = "100ms"
{PULSE}""",
        ).replace("[workers]\nmax = 4", f'[workers]\nmax = 4\nmin = 1\npythonpath = ["{REPO}"]')
    )
    d.start()
    key = "poison@2026-01-01T00:00:00.000Z"
    firing = quarantined(d, key)
    assert (firing["attempt"], firing["crashes"]) == (2, 2)
    assert firing["reason"].startswith("quarantined after 2 crashes")
    # Keep going for a while after the quarantine: nothing more of the poison runs.
    assert d.call("wait", schedule="pulse", count=15, timeout_ms=60_000)["done"]
    assert d.stop() == 0
    runs = store_rows(
        d,
        "SELECT r.attempt, r.state, r.signal FROM runs r JOIN firings f ON f.id = r.firing_id"
        " WHERE f.key = ? ORDER BY r.id",
        key,
    )
    assert runs == [(1, "crash", 11), (2, "crash", 11)]
    late = lateness_ms(d, "pulse")
    assert len(late) >= 15
    assert min(late) >= 0, "never early"
    assert max(late) <= 100, f"pulse runs were late by up to {max(late)} ms: {late}"
    assert "quarantined: schedule=poison" in d.logs()


def test_a_command_killed_by_sigkill_is_quarantined_across_a_daemon_restart(
    daemon_factory: Any, workdir: Path
) -> None:
    gate = workdir / "gate"
    hooked = workdir / "hooked"
    os.mkfifo(gate)
    d: Daemon = daemon_factory(
        base_config(
            f"""
[schedules.poison]
at = "{PAST}"
command = ["sh", "-c", "cat {gate} > /dev/null; kill -9 $$"]
on_quarantine = ["sh", "-c", "env | grep ^SCHEDD_ | sort > {hooked}"]
[schedules.poison.retry]
max_attempts = 5
base = "10ms"
max = "10ms"
"""
        )
    )
    key = "poison@2026-01-01T00:00:00.000Z"

    def open_gate() -> None:
        """Let exactly one waiting run through (opening for write blocks until it reads)."""
        opener = threading.Thread(target=lambda: gate.write_bytes(b"go\n"), daemon=True)
        opener.start()
        opener.join(60)
        assert not opener.is_alive(), "no run was waiting at the gate"

    d.start()
    open_gate()  # attempt 1 crashes
    running = d.call("wait", key=key, states=["running"], min_attempt=2, timeout_ms=60_000)
    assert running["done"]
    assert (running["firing"]["attempt"], running["firing"]["crashes"]) == (2, 1)
    d.stop(signal.SIGKILL)  # attempt 2 is at the gate when the daemon dies
    d.start()
    open_gate()  # attempt 3, after recovery, crashes: the second crash
    firing = quarantined(d, key)
    assert (firing["attempt"], firing["crashes"]) == (3, 2)
    runs = store_rows(
        d,
        "SELECT r.attempt, r.state FROM runs r JOIN firings f ON f.id = r.firing_id"
        " WHERE f.key = ? ORDER BY r.id",
        key,
    )
    assert runs == [(1, "crash"), (2, "lost"), (3, "crash")]
    assert d.stop() == 0  # shutdown lets the hook finish
    env = dict(line.split("=", 1) for line in hooked.read_text().splitlines())
    assert env["SCHEDD_IDEMPOTENCY_KEY"] == key
    assert env["SCHEDD_ATTEMPT"] == "3"
    assert env["SCHEDD_SCHEDULE"] == "poison"
    assert env["SCHEDD_QUARANTINE_REASON"].startswith("quarantined after 2 crashes")
    assert env["SCHEDD_FIRING_ID"].isdigit()


def test_a_python_run_killed_before_its_rows_are_stored_runs_again_and_is_stored_once(
    daemon_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A no-op Python run ends before the writer reaches its start, and is then stored whole (one
    row, one firing change). Killed right after the run, before either is stored
    (``after_run_before_result``), the next daemon runs the key again with attempt 2."""
    d: Daemon = daemon_factory(
        base_config(
            f"""
[schedules.once]
at = "{PAST}"
python = "tests.pytasks:pid"
"""
        ).replace("[workers]\nmax = 4", f'[workers]\nmax = 4\npythonpath = ["{REPO}"]')
    )
    monkeypatch.setenv(failpoints.ENV, "after_run_before_result=kill:1")
    assert d.start(wait_ready=False).wait(timeout=60) == -signal.SIGKILL, d.logs()
    key = "once@2026-01-01T00:00:00.000Z"
    [(state, attempt)] = store_rows(d, "SELECT state, attempt FROM firings WHERE key = ?", key)
    assert (state, attempt) in {("committed", 1), ("running", 1)}, "its end was never stored"
    monkeypatch.delenv(failpoints.ENV)
    d.start()
    result = d.call("wait", key=key, states=["succeeded", "dead"], timeout_ms=30_000)
    assert result["done"], d.logs()
    assert (result["firing"]["state"], result["firing"]["attempt"]) == ("succeeded", 2)
    assert d.stop() == 0
    runs = store_rows(
        d,
        "SELECT r.attempt, r.state FROM runs r JOIN firings f ON f.id = r.firing_id"
        " WHERE f.key = ? ORDER BY r.id",
        key,
    )
    assert runs[-1] == (2, "succeeded"), runs
    assert all(row == (1, "lost") for row in runs[:-1]), runs  # a start written, if any
