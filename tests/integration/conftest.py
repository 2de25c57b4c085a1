"""Run the real daemon as a subprocess, as a user would, and drive it through schedctl.

Readiness is the systemd handshake: the daemon sends READY=1 to a datagram socket the test
owns (``NOTIFY_SOCKET``), so the test waits for an event instead of sleeping. State lives in a
short temporary directory (Unix socket paths are limited to 107 bytes).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schedd.admin.client import AdminClient

READY_TIMEOUT_S = 30


class Daemon:
    def __init__(self, root: Path, config_text: str) -> None:
        self.root = root
        self.config = root / "schedd.toml"
        self.config.write_text(config_text)
        self.socket = root / "state" / "schedd.sock"
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True) -> subprocess.Popen[bytes]:
        notify_path = self.root / f"notify-{len(os.listdir(self.root))}.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "schedd.cli.schedd", "run", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.root,
            )
        try:
            if wait_ready:
                notify.settimeout(READY_TIMEOUT_S)
                while True:
                    try:
                        msg = notify.recv(4096).decode()
                    except TimeoutError:
                        pytest.fail(f"daemon not ready after {READY_TIMEOUT_S}s:\n{self.logs()}")
                    if "READY=1" in msg.split("\n"):
                        break
        finally:
            notify.close()
            notify_path.unlink()
        return self.proc

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run schedctl against this daemon; with ``check`` a non-zero exit fails the test."""
        cmd = [sys.executable, "-m", "schedd.cli.schedctl", "--socket", str(self.socket), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            pytest.fail(
                f"{cmd} -> {result.returncode}\n{result.stdout}\n{result.stderr}\n{self.logs()}"
            )
        return result

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "--json").stdout)

    def call(self, op: str, **args: Any) -> Any:
        with AdminClient(self.socket, timeout_s=120) as client:
            return client.call(op, args)


class TaskSignal:
    """A named pipe a task writes to when it has reached a point, so a test blocks on the event.

    A run is ``running`` in the store from its spawn, before its shell has done anything; a test
    that needs the task to have *acted* (written its probe line) waits here. The test holds the
    pipe open read-write, so a task's ``echo > PIPE`` never blocks and ``select`` wakes on its
    bytes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def wait(self, within_s: float = 30.0) -> bytes:
        ready, _, _ = select.select([self._fd], [], [], within_s)
        if not ready:
            pytest.fail(f"no task wrote to {self.path} within {within_s}s")
        return os.read(self._fd, 4096)

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="schedd-it-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon_factory(workdir: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(config_text: str) -> Daemon:
        d = Daemon(workdir, config_text)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(timeout=30)


def base_config(schedules: str, **daemon: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in daemon.items())
    return f"""
[daemon]
state_dir = "state"
shutdown_grace = "20s"
{extra}
[workers]
max = 4

[logging]
level = "debug"

{schedules}
"""
