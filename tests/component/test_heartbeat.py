"""The heartbeat against a real HTTP monitor on 127.0.0.1, with time on a fake clock.

The monitor is ``http.server`` in a thread; it records each request and answers with whatever
status the test sets, or holds the request until the test lets go (a monitor that never
answers). Pings go through the production ``send`` (urllib in a thread). The test advances the
fake clock to the next tick, then waits for the outcome the heartbeat reports (``on_result``) or,
when no ping may go out, until the heartbeat is asleep again (``clock.settled()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import queue
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

from schedd.config import HeartbeatConfig
from schedd.heartbeat import Heartbeat
from tests.fakes import FakeClock

INTERVAL = 60_000
TIMEOUT = 5_000
SECRET = "/ping/0b5e1c2d-secret"
WAIT_S = 10  # a bound on waiting for an outcome that is due now, not a synchronization


@dataclass
class Monitor:
    url: str
    requests: queue.SimpleQueue[tuple[str, str, bytes, str]]
    status: int = 200
    hang: bool = False
    release: threading.Event = field(default_factory=threading.Event)

    async def received(self) -> tuple[str, str, bytes, str]:
        return await asyncio.to_thread(self.requests.get, timeout=WAIT_S)


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    requests: queue.SimpleQueue[tuple[str, str, bytes, str]] = queue.SimpleQueue()
    mon: Monitor

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            requests.put((self.command, self.path, body, self.headers.get("Content-Type", "")))
            if mon.hang:
                mon.release.wait()
                return
            self.send_response(mon.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    mon = Monitor(f"http://127.0.0.1:{server.server_address[1]}{SECRET}", requests)
    try:
        yield mon
    finally:
        mon.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Beat:
    clock: FakeClock
    results: asyncio.Queue[bool]
    reason: str | None = None  # what ``healthy()`` answers

    async def tick(self) -> bool:
        """Move to the next tick and return the ping's outcome."""
        self.clock.advance(INTERVAL)
        return await asyncio.wait_for(self.results.get(), WAIT_S)

    async def quiet_tick(self) -> None:
        """Move to the next tick, where no ping may go out, and wait until it has passed."""
        self.clock.advance(INTERVAL)
        await self.clock.settled()


@contextlib.asynccontextmanager
async def beating(
    clock: FakeClock,
    url: str | None,
    *,
    method: Literal["GET", "POST"] = "GET",
    summary: Callable[[], str] = str,
) -> AsyncIterator[Beat]:
    results: asyncio.Queue[bool] = asyncio.Queue()
    beat = Beat(clock, results)
    config = HeartbeatConfig(url=url, interval_ms=INTERVAL, method=method, timeout_ms=TIMEOUT)
    hb = Heartbeat(
        config, clock, lambda: beat.reason, summary=summary, on_result=results.put_nowait
    )
    clock.unsettle()
    task = asyncio.create_task(hb.run())
    await clock.settled()
    try:
        yield beat
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_pings_every_interval_while_healthy(clock: FakeClock, monitor: Monitor) -> None:
    async with beating(clock, monitor.url) as beat:
        assert clock.next_deadline() == clock.monotonic_ms() + INTERVAL, "first tick after one"
        assert await beat.tick() is True
        assert await beat.tick() is True
    assert await monitor.received() == ("GET", SECRET, b"", "")
    assert await monitor.received() == ("GET", SECRET, b"", "")
    assert monitor.requests.empty()


async def test_post_sends_the_summary_line(clock: FakeClock, monitor: Monitor) -> None:
    async with beating(clock, monitor.url, method="POST", summary=lambda: "3 schedules") as beat:
        assert await beat.tick() is True
    assert await monitor.received() == (
        "POST",
        SECRET,
        b"3 schedules",
        "text/plain; charset=utf-8",
    )


async def test_no_ping_while_unhealthy_and_one_log_line_each_way(
    clock: FakeClock, monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "schedd.heartbeat")
    async with beating(clock, monitor.url) as beat:
        assert await beat.tick() is True
        beat.reason = "no firing for 10m"
        await beat.quiet_tick()
        await beat.quiet_tick()
        assert beat.results.empty()
        beat.reason = None
        assert await beat.tick() is True
    assert [await monitor.received() for _ in range(2)] == [("GET", SECRET, b"", "")] * 2
    assert monitor.requests.empty(), "nothing was sent while unhealthy"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "heartbeat paused, the monitor will raise the alarm: no firing for 10m"),
        (logging.INFO, "heartbeat resumed: schedd is healthy again"),
    ]


async def test_an_error_status_is_a_failure_and_the_beat_goes_on(
    clock: FakeClock, monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    monitor.status = 500
    async with beating(clock, monitor.url) as beat:
        assert await beat.tick() is False
        monitor.status = 200
        assert await beat.tick() is True
    assert "heartbeat ping to http://127.0.0.1:" in caplog.text
    assert "failed: the monitor answered HTTP 500" in caplog.text
    assert "secret" not in caplog.text, "the ping URL's secret path stays out of the log"


async def test_a_refused_connection_is_a_failure_every_tick(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nobody listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with beating(clock, f"http://127.0.0.1:{port}{SECRET}") as beat:
        assert await beat.tick() is False
        assert await beat.tick() is False
    [first, _] = [r for r in caplog.records if r.name == "schedd.heartbeat"]
    assert first.levelno == logging.WARNING
    assert "Connection refused" in first.getMessage()


async def test_a_monitor_that_does_not_answer_fails_at_the_timeout(
    clock: FakeClock, monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    monitor.hang = True
    async with beating(clock, monitor.url) as beat:
        clock.advance(INTERVAL)
        await monitor.received()
        clock.advance(TIMEOUT - 1)
        await clock.settled()
        assert beat.results.empty(), "not a failure before the timeout"
        clock.advance(1)
        assert await asyncio.wait_for(beat.results.get(), WAIT_S) is False
        assert "failed: no answer within 5s" in caplog.text
        monitor.release.set()
        monitor.hang = False
        clock.advance(INTERVAL - TIMEOUT)
        assert await asyncio.wait_for(beat.results.get(), WAIT_S) is True


async def test_without_a_url_there_is_no_heartbeat(clock: FakeClock) -> None:
    hb = Heartbeat(HeartbeatConfig(url=None), clock, lambda: None)
    await asyncio.wait_for(hb.run(), WAIT_S)
