"""The systemd notify protocol as a real daemon speaks it: READY after recovery, WATCHDOG only
while the dispatch loop advances, STOPPING at the end, on a NOTIFY_SOCKET the test owns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Daemon, base_config


class Notifications:
    """The datagrams a daemon sends to ``NOTIFY_SOCKET``, read with a deadline per message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def next(self, within_s: float) -> list[str] | None:
        """The fields of the next message, or None if none came within ``within_s``."""
        self.sock.settimeout(within_s)
        try:
            fields = self.sock.recv(65536).decode().split("\n")
        except TimeoutError:
            return None
        self.seen.extend(fields)
        return fields

    def until(self, field: str, within_s: float = 30) -> list[str]:
        """Read messages until one carries ``field`` exactly (or starts with it, for ``X=``)."""
        while True:
            fields = self.next(within_s)
            assert fields is not None, f"no {field} within {within_s}s; seen {self.seen}"
            if any(f == field or (field.endswith("=") and f.startswith(field)) for f in fields):
                return fields

    def close(self) -> None:
        self.sock.close()


def start(d: Daemon, note: Notifications, **env: str) -> subprocess.Popen[bytes]:
    with d.log.open("ab") as log:
        d.proc = subprocess.Popen(
            [sys.executable, "-m", "schedd.cli.schedd", "run", "--config", str(d.config)],
            stdout=log,
            stderr=log,
            env={**os.environ, "NOTIFY_SOCKET": str(note.path), **env},
            cwd=d.root,
        )
    return d.proc


@pytest.fixture
def note(workdir: Path) -> Iterator[Notifications]:
    n = Notifications(workdir / "notify.sock")
    yield n
    n.close()


HANG = 'command = ["/bin/sh", "-c", "[ \\"$SCHEDD_ATTEMPT\\" != 1 ] || exec sleep 300"]'


def test_ready_comes_after_recovery_then_watchdog_then_stopping(
    daemon_factory: Any, note: Notifications
) -> None:
    d: Daemon = daemon_factory(base_config(f'[schedules.hang]\nevery = "1h"\n{HANG}\n'))
    d.start()
    d.call("schedules.trigger", name="hang", key="hang-1")
    assert d.call("wait", key="hang-1", states=["running"], timeout_ms=30_000)["done"]
    d.stop(signal.SIGKILL)

    proc = start(d, note, WATCHDOG_USEC="4000000")
    note.until("READY=1")
    # Recovery happened before READY: the run cut short by the kill is already closed as lost.
    runs = d.call("runs.list", key="hang-1")["runs"]
    assert [(r["attempt"], r["state"]) for r in runs][-1] == (1, "lost")
    status = note.until("WATCHDOG=1", within_s=10)
    assert any(f.startswith("STATUS=") and "schedule(s)" in f for f in status)

    proc.send_signal(signal.SIGTERM)
    note.until("STOPPING=1")
    assert proc.wait(timeout=60) == 0
    ready, stopping = note.seen.index("READY=1"), note.seen.index("STOPPING=1")
    assert ready < note.seen.index("WATCHDOG=1") < stopping
    assert all(f != "WATCHDOG=1" for f in note.seen[stopping:])


def test_a_wedged_dispatch_loop_stops_the_watchdog_pings(
    daemon_factory: Any, note: Notifications
) -> None:
    d: Daemon = daemon_factory(base_config(""))
    # The timer wakes about once a second; its 4th wake-up hangs the dispatch loop forever
    # while the event loop (and the admin socket) keep running.
    proc = start(d, note, WATCHDOG_USEC="4000000", SCHEDD_FAILPOINTS="timer_wake=hang:4")
    note.until("READY=1")
    note.until("WATCHDOG=1", within_s=10)
    unhealthy = note.until("STATUS=", within_s=15)
    while not any(f.startswith("STATUS=unhealthy") for f in unhealthy):
        unhealthy = note.until("STATUS=", within_s=15)
    assert any("dispatch loop has not advanced" in f for f in unhealthy)
    # From now on no ping comes: the next beats (one every 2 s) carry only the unhealthy status.
    for _ in range(3):
        fields = note.next(within_s=8)
        assert fields is not None, "the status beat goes on while pings are withheld"
        assert "WATCHDOG=1" not in fields, note.seen
    assert d.call("status")["pid"] == proc.pid, "the process itself is alive and answering"
    assert "withholding watchdog pings" in d.logs()
