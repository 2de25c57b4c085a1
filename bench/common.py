"""What every scenario shares: the one clock, statistics, a real daemon, fresh interpreters.

The harness reads clocks (it measures time); the daemon's rule that only ``schedd/clock.py``
reads clocks is kept here in spirit: every clock read of the harness is in this module.
Scenarios run their measured code in a **fresh interpreter** (``run_child``) so that one
scenario's heap, imports and garbage do not slow or inflate the next, and so RSS figures
are of that work alone.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def now_s() -> float:
    """Monotonic seconds: intervals only."""
    return time.perf_counter()


def wall_ms() -> int:
    """Wall-clock milliseconds: to compare with the daemon's stored wall times."""
    return time.time_ns() // 1_000_000


def wall_s() -> float:
    """Wall-clock seconds as a float: lateness of in-process peers, in their own terms."""
    return time.time()


def sleep_s(seconds: float) -> None:
    time.sleep(seconds)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; enough for p50/p99 over thousands of samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def median(values: Sequence[float]) -> float:
    return percentile(values, 50) if len(values) % 2 else _even_median(values)


def _even_median(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return (ordered[mid - 1] + ordered[mid]) / 2


def lateness_summary(lateness_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(lateness_ms, 50),
        "p99": percentile(lateness_ms, 99),
        "max": max(lateness_ms) if lateness_ms else float("nan"),
        "early": float(sum(1 for x in lateness_ms if x < 0)),
    }


def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    """Resident memory now, or with ``field="VmHWM"`` its peak since the process started."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc (its children are not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(
    cond: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05
) -> None:
    """Poll a condition with a deadline: the harness's only way of waiting for the daemon."""
    deadline = now_s() + timeout_s
    while not cond():
        if now_s() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        sleep_s(every_s)


def run_child(target: str, args: dict[str, Any], timeout_s: float = 900) -> Any:
    """Run ``module:function(**args)`` in a fresh interpreter and return its JSON result."""
    code = (
        "import importlib, json, sys\n"
        "mod, fn = sys.argv[1].split(':')\n"
        "res = getattr(importlib.import_module(mod), fn)(**json.loads(sys.argv[2]))\n"
        "sys.stdout.write('\\n@@RESULT@@' + json.dumps(res))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, target, json.dumps(args)],
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if proc.returncode != 0 or "@@RESULT@@" not in proc.stdout:
        raise RuntimeError(f"{target} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.rsplit("@@RESULT@@", 1)[1])


@dataclass
class Daemon:
    """The real daemon, started as a user would (``schedd run --config``), ready via sd_notify."""

    root: Path
    config_text: str
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = 0.0

    @property
    def config(self) -> Path:
        return self.root / "schedd.toml"

    @property
    def socket(self) -> Path:
        return self.root / "state" / "schedd.sock"

    @property
    def db(self) -> Path:
        return self.root / "state" / "schedd.db"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 600) -> float:
        """Start and block until READY=1; return seconds from spawn to READY."""
        self.config.write_text(self.config_text)
        notify_path = self.root / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(0.2)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "PYTHONPATH": str(REPO)}
        try:
            with (self.root / "daemon.log").open("ab") as log:
                t0 = now_s()
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "schedd.cli.schedd",
                        "run",
                        "--config",
                        str(self.config),
                    ],
                    stdout=log,
                    stderr=log,
                    env=env,
                    cwd=self.root,
                )
            while True:
                try:
                    msg = notify.recv(4096).decode()
                except TimeoutError:
                    if self.proc.poll() is not None:
                        raise RuntimeError(
                            f"daemon exited {self.proc.returncode}:\n{self.logs()}"
                        ) from None
                    if now_s() - t0 > timeout_s:
                        raise RuntimeError(
                            f"daemon not READY in {timeout_s}s:\n{self.logs()}"
                        ) from None
                    continue
                if "READY=1" in msg.split("\n"):
                    self.ready_s = now_s() - t0
                    return self.ready_s
        finally:
            notify.close()
            notify_path.unlink(missing_ok=True)

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 120) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def logs(self) -> str:
        path = self.root / "daemon.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def call(self, op: str, **args: Any) -> Any:
        return Admin(self.socket).call(op, args)


def request_line(request_id: int, op: str, args: dict[str, Any]) -> bytes:
    """One admin request as its bytes on the wire: the client's encoding, stated once so a
    floor can decode exactly what the daemon reads."""
    return (json.dumps({"id": request_id, "op": op, "args": args}) + "\n").encode()


class Admin:
    """A minimal client of the admin protocol (newline-delimited JSON), pipelining allowed.

    The harness speaks the wire protocol itself rather than importing schedd's client, so it
    measures what any client in any language would see.
    """

    def __init__(self, path: Path, timeout_s: float = 600) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self.next_id = 0

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, op: str, args: dict[str, Any]) -> None:
        self.next_id += 1
        self.sock.sendall(request_line(self.next_id, op, args))

    def receive(self) -> Any:
        answer = json.loads(self.reader.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"admin error: {answer.get('error')}")
        return answer["result"]

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        try:
            self.send(op, args or {})
            return self.receive()
        finally:
            self.close()


def pipeline(
    path: Path,
    requests: Sequence[tuple[str, dict[str, Any]]],
    connections: int = 4,
    window: int = 500,
) -> float:
    """Send every request over ``connections`` connections, at most ``window`` in flight on
    each, as a busy client would; return the seconds until the last answer. Any error answer
    raises.

    Each connection reads its answers in a thread of its own while it sends: answers can be
    large (``schedules.add`` echoes the task), and a client that only reads after sending a
    window would fill both socket buffers and wait for a daemon that waits for it.
    """
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(exc)

        return run

    def connection(share: Sequence[tuple[str, dict[str, Any]]]) -> list[threading.Thread]:
        admin = Admin(path)
        room = threading.Semaphore(window)

        def send() -> None:
            try:
                for op, args in share:
                    room.acquire()
                    admin.send(op, args)
            except BaseException:
                admin.sock.shutdown(socket.SHUT_RDWR)  # the receiver stops waiting too
                raise

        def receive() -> None:
            try:
                for _ in share:
                    admin.receive()
                    room.release()
            finally:
                room.release(len(share))  # a sender still waiting for room goes on, and fails
                admin.close()

        return [threading.Thread(target=guarded(send)), threading.Thread(target=guarded(receive))]

    size = -(-len(requests) // connections)
    threads = [t for i in range(0, len(requests), size) for t in connection(requests[i : i + size])]
    t0 = now_s()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return now_s() - t0


class CommitWatch:
    """When each firing became durable, seen from outside: a read-only connection polls the
    store's highest firing id every ``every_s`` (a short read, so it never holds back the
    daemon's checkpoints).

    Firing ids grow in insert order and a transaction becomes visible to readers only once
    committed, so the first poll that sees ``max(id) >= i`` bounds firing ``i``'s commit time
    from above, to within one poll. Polling ``status`` would give the same at the price of a
    request the daemon must answer; this read asks nothing of the daemon.
    """

    def __init__(self, db: Path, every_s: float = 0.001) -> None:
        self._db = db
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="commit-watch", daemon=True)
        #: ``(wall ms, highest visible firing id)`` at each change.
        self.seen: list[tuple[int, int]] = []
        self.polls = 0

    def __enter__(self) -> CommitWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        db = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True, isolation_level=None)
        try:
            top = 0
            while not self._stop.is_set():
                (highest,) = db.execute("SELECT coalesce(max(id), 0) FROM firings").fetchone()
                self.polls += 1
                if highest > top:
                    top = highest
                    self.seen.append((wall_ms(), highest))
                sleep_s(self._every_s)
        finally:
            db.close()

    def committed_ms(self, firing_id: int) -> int | None:
        """Wall ms of the first poll that saw ``firing_id`` committed; None if none did."""
        i = bisect.bisect_left(self.seen, firing_id, key=lambda s: s[1])
        return self.seen[i][0] if i < len(self.seen) else None


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix=f"sb-{prefix}-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """Always SIGKILL what we started, whatever the scenario did."""
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


def config(schedules: str = "", *, workers: int = 4, extra: str = "") -> str:
    """A daemon's config for a scenario: logging as shipped (``info``: a line at each run's
    start and end), since that is what a user's daemon pays."""
    return f"""
[daemon]
state_dir = "state"
shutdown_grace = "1s"

[workers]
max = {workers}
{extra}
{schedules}
"""


def rfc3339_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
