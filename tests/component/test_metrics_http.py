"""The metrics endpoint over real TCP on 127.0.0.1, and the textfile writer on a real directory.

Timeouts and intervals run on a FakeClock: tests wait for the code under test to go back to
sleep on it (``settled``) and move time exactly; everything else is awaited on the socket
(a full answer, or EOF) — never on sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schedd.metrics import Metrics
from schedd.metrics_http import MetricsServer, serve_metrics, write_textfile_forever
from tests.fakes import FakeClock

TIMEOUT_MS = 5_000
LIMIT = 1024


@dataclass
class Scrapes:
    """A render callback that counts its calls, over a real :class:`Metrics`."""

    metrics: Metrics = field(default_factory=Metrics)
    calls: int = 0

    async def render(self) -> bytes:
        self.calls += 1
        self.metrics.committed(self.calls)  # each scrape sees a different body
        return self.metrics.render()


@pytest.fixture
async def scrapes() -> Scrapes:
    return Scrapes()


@pytest.fixture
async def server(clock: FakeClock, scrapes: Scrapes) -> AsyncIterator[MetricsServer]:
    srv = await serve_metrics(
        "127.0.0.1",
        0,
        scrapes.render,
        Metrics.content_type,
        clock=clock,
        read_timeout_ms=TIMEOUT_MS,
        max_request_bytes=LIMIT,
        max_connections=2,
    )
    async with srv:
        yield srv


def port(server: MetricsServer) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def exchange(server: MetricsServer, request: bytes) -> bytes:
    """Send ``request`` and return everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
    writer.write(request)
    writer.write_eof()
    try:
        return await reader.read()
    finally:
        writer.close()


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("ascii").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


def committed(body: bytes) -> float:
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "schedd_firings_committed":
            return family.samples[0].value
    raise AssertionError("schedd_firings_committed missing")


async def test_a_scraper_gets_parseable_metrics(server: MetricsServer, scrapes: Scrapes) -> None:
    url = f"http://127.0.0.1:{port(server)}/metrics"

    def get() -> tuple[int, str | None, bytes]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()

    status, content_type, body = await asyncio.to_thread(get)
    assert (status, content_type) == (200, Metrics.content_type)
    assert committed(body) == 1
    # Rendered anew for each scrape, query strings (Prometheus ``params``) ignored.
    _, _, body = split(await exchange(server, b"GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert committed(body) == 3
    assert scrapes.calls == 2


async def test_head_has_the_headers_of_get_and_no_body(server: MetricsServer) -> None:
    status, headers, body = split(await exchange(server, b"HEAD /metrics HTTP/1.1\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK"
    assert body == b""
    assert headers["Content-Type"] == Metrics.content_type
    assert int(headers["Content-Length"]) > 1000
    assert headers["Connection"] == "close"


@pytest.mark.parametrize("path", ["/", "/metricsx", "/metrics/", "/other?/metrics"])
async def test_other_paths_are_not_found(
    server: MetricsServer, scrapes: Scrapes, path: str
) -> None:
    url = f"http://127.0.0.1:{port(server)}{path}"
    with pytest.raises(urllib.error.HTTPError) as err:
        await asyncio.to_thread(urllib.request.urlopen, url, timeout=10)
    assert err.value.code == 404
    err.value.close()
    assert scrapes.calls == 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"GET /metrics SPDY/3\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ],
)
async def test_requests_it_does_not_serve_are_refused(
    server: MetricsServer, scrapes: Scrapes, request_bytes: bytes, status: str
) -> None:
    got, headers, _ = split(await exchange(server, request_bytes))
    assert got == status
    assert headers["Connection"] == "close"
    assert scrapes.calls == 0


async def test_an_oversized_request_is_refused_and_its_answer_delivered(
    server: MetricsServer, scrapes: Scrapes
) -> None:
    huge = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * (LIMIT * 16) + b"\r\n\r\n"
    status, _, _ = split(await exchange(server, huge))
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert scrapes.calls == 0


async def test_a_request_must_arrive_within_the_read_timeout(
    server: MetricsServer, clock: FakeClock
) -> None:
    clock.unsettle()
    reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
    writer.write(b"GET /metr")
    await clock.settled()  # the server waits for the rest, on the clock
    clock.advance(TIMEOUT_MS)
    assert await reader.read() == b""
    writer.close()


async def test_a_slow_request_within_the_timeout_is_served(
    server: MetricsServer, clock: FakeClock
) -> None:
    clock.unsettle()
    reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
    writer.write(b"GET /metr")
    await clock.settled()
    clock.advance(TIMEOUT_MS - 1)
    writer.write(b"ics HTTP/1.1\r\n\r\n")
    status, _, _ = split(await reader.read())
    assert status == "HTTP/1.1 200 OK"
    writer.close()


async def test_connections_over_the_limit_are_closed_unanswered(
    server: MetricsServer, clock: FakeClock
) -> None:
    held = []
    for _ in range(2):  # max_connections
        clock.unsettle()
        reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        await clock.settled()  # its handler is running, waiting for the end of the head
        held.append((reader, writer))
    reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
    assert await reader.read() == b""  # closed before it even sent its request
    writer.close()
    # Finishing one held request frees its slot before the server closes it.
    reader, writer = held.pop()
    writer.write(b"\r\n")
    assert split(await reader.read())[0] == "HTTP/1.1 200 OK"
    status, _, _ = split(await exchange(server, b"GET /metrics HTTP/1.1\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK"
    for _, w in [*held, (reader, writer)]:
        w.close()


async def test_a_failing_render_is_a_500_and_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> bytes:
        raise RuntimeError("store is closed")

    caplog.set_level(logging.ERROR, logger="schedd.metrics")
    async with await serve_metrics(
        "127.0.0.1", 0, broken, Metrics.content_type, clock=clock
    ) as srv:
        status, _, _ = split(await exchange(srv, b"GET /metrics HTTP/1.1\r\n\r\n"))
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert "store is closed" in caplog.text


async def test_closing_the_server_cancels_a_scrape_in_flight(clock: FakeClock) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck() -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    srv = await serve_metrics("127.0.0.1", 0, stuck, Metrics.content_type, clock=clock)
    reader, writer = await asyncio.open_connection("127.0.0.1", port(srv))
    writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
    await started.wait()
    srv.close()
    await srv.wait_closed()
    assert cancelled.is_set()
    assert await reader.read() == b""
    writer.close()


# --- the textfile -------------------------------------------------------------------------


@dataclass
class Bodies:
    """A render callback returning a new body each call, or raising what ``fail`` holds."""

    calls: int = 0
    fail: Exception | None = None

    async def render(self) -> bytes:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return f"schedd_test {self.calls}\n".encode()


async def writing(
    path: Path, render: Callable[[], Awaitable[bytes]], clock: FakeClock
) -> asyncio.Task[None]:
    """Start the writer and return once it has done its first round and sleeps."""
    clock.unsettle()
    task = asyncio.create_task(write_textfile_forever(path, 1000, render, clock))
    await clock.settled()
    return task


async def tick(clock: FakeClock, ms: int) -> None:
    clock.advance(ms)
    await clock.settled()


@pytest.fixture
async def stop() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_textfile_is_rewritten_every_interval(
    tmp_path: Path, clock: FakeClock, stop: list[asyncio.Task[None]]
) -> None:
    path = tmp_path / "schedd.prom"
    bodies = Bodies()
    stop.append(await writing(path, bodies.render, clock))
    assert path.read_bytes() == b"schedd_test 1\n"
    await tick(clock, 999)
    assert bodies.calls == 1
    await tick(clock, 1)
    assert path.read_bytes() == b"schedd_test 2\n"
    assert os.listdir(tmp_path) == ["schedd.prom"]  # no temporary file left behind


async def test_the_textfile_is_replaced_never_rewritten_in_place(
    tmp_path: Path,
    clock: FakeClock,
    stop: list[asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "schedd.prom"
    renamed: list[tuple[str, bytes]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renamed.append((os.fspath(src), Path(src).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    stop.append(await writing(path, Bodies().render, clock))
    with path.open("rb") as old:  # a reader that opened the file before the next round
        await tick(clock, 1000)
        assert old.read() == b"schedd_test 1\n"
    assert path.read_bytes() == b"schedd_test 2\n"
    [(tmp, complete), _] = renamed
    # Complete before it takes the real name; beside it (same filesystem), and not *.prom
    # so node_exporter never reads it half-written.
    assert complete == b"schedd_test 1\n"
    assert Path(tmp).parent == tmp_path
    assert not tmp.endswith(".prom")


async def test_a_failed_write_is_logged_and_retried(
    tmp_path: Path,
    clock: FakeClock,
    stop: list[asyncio.Task[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="schedd.metrics")
    path = tmp_path / "missing" / "schedd.prom"
    bodies = Bodies()
    task = await writing(path, bodies.render, clock)
    stop.append(task)
    assert "cannot write the metrics textfile" in caplog.text
    await tick(clock, 1000)
    assert bodies.calls == 2
    assert not task.done()
    path.parent.mkdir()
    await tick(clock, 1000)
    assert path.read_bytes() == b"schedd_test 3\n"
    assert "written again" in caplog.text
    assert os.listdir(path.parent) == ["schedd.prom"]


async def test_a_failed_render_is_logged_and_retried(
    tmp_path: Path,
    clock: FakeClock,
    stop: list[asyncio.Task[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="schedd.metrics")
    path = tmp_path / "schedd.prom"
    bodies = Bodies(fail=RuntimeError("store is closed"))
    task = await writing(path, bodies.render, clock)
    stop.append(task)
    assert "store is closed" in caplog.text
    assert not path.exists()
    bodies.fail = None
    await tick(clock, 1000)
    assert not task.done()
    assert path.read_bytes() == b"schedd_test 2\n"
