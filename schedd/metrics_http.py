"""Getting the metrics out: a tiny HTTP endpoint and a node_exporter textfile.

Why not ``prometheus_client.start_http_server``: it serves from its own thread and calls the
registry synchronously, while schedd's gauges must first be refreshed from the store, which is
an ``await`` on the daemon's event loop. So ``render`` is a coroutine and the server is a few
dozen lines on asyncio streams, speaking just enough HTTP/1.1 for a scraper.

The listener is built to be harmless when misused, because it shares a process (and its file
descriptors) with the scheduler:

* a request head over ``max_request_bytes`` is answered 431 and the connection closed; the rest
  of what the client sent is read and dropped first (up to :data:`LINGER_BYTES`), because closing
  a socket with unread input makes the kernel send a reset that can destroy the answer;
* a head that has not arrived within ``read_timeout_ms`` gets the connection closed, and an answer
  the client does not read within the same time is dropped, so slow clients cannot pile up;
* at most ``max_connections`` connections are served at once; more are closed unanswered;
* one response per connection (``Connection: close``): scrapes are seconds apart, so keep-alive
  would save nothing and cost state;
* closing the server cancels the connections in flight, so no render touches the store after
  the daemon closed it.

All timeouts run on the injected :class:`~schedd.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from schedd.clock import Clock

log = logging.getLogger("schedd.metrics")

PATH = "/metrics"
MAX_REQUEST_BYTES = 8 * 1024
READ_TIMEOUT_MS = 10_000
MAX_CONNECTIONS = 16
#: How much of a refused request is read and dropped before closing (see the module docstring).
LINGER_BYTES = 64 * 1024

_T = TypeVar("_T")
Render = Callable[[], Awaitable[bytes]]


class MetricsServer(asyncio.AbstractServer):
    """An :class:`asyncio.Server` whose ``close`` also ends the connections being served.

    Python 3.11's ``Server.close`` only stops accepting; a scrape in flight would go on
    rendering from a store the daemon is about to close.
    """

    def __init__(self, server: asyncio.Server, connections: set[asyncio.Task[Any]]) -> None:
        self._server = server
        self._connections = connections

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (to learn the port bound for port 0)."""
        return self._server.sockets

    def close(self) -> None:
        self._server.close()
        for task in self._connections:
            task.cancel()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()


async def serve_metrics(
    host: str,
    port: int,
    render: Render,
    content_type: str,
    *,
    clock: Clock,
    read_timeout_ms: int = READ_TIMEOUT_MS,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_connections: int = MAX_CONNECTIONS,
) -> MetricsServer:
    """Listen on ``host:port`` and answer ``GET /metrics`` with what ``render`` returns."""
    handler = _Handler(render, content_type, clock, read_timeout_ms, max_connections)
    server = await asyncio.start_server(handler.serve, host, port, limit=max_request_bytes)
    return MetricsServer(server, handler.connections)


class _Handler:
    def __init__(
        self,
        render: Render,
        content_type: str,
        clock: Clock,
        read_timeout_ms: int,
        max_connections: int,
    ) -> None:
        self._render = render
        self._content_type = content_type
        self._clock = clock
        self._timeout_ms = read_timeout_ms
        self._max = max_connections
        self.connections: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.connections) >= self._max:
            log.warning("metrics connection refused: %d connections open", len(self.connections))
            writer.transport.abort()
            return
        self.connections.add(task)
        try:
            await self._exchange(reader, writer)
        except OSError:
            # The client reset the connection, or did not read the answer in time: close without
            # waiting for the unread bytes to drain (they never would).
            writer.transport.abort()
        except asyncio.CancelledError:
            # The server is closing. This task is the connection's own and ends here; ending it
            # normally keeps Python 3.11's stream callback from logging the cancellation as an
            # unhandled error.
            writer.transport.abort()
        finally:
            self.connections.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await self._in_time(reader.readuntil(b"\r\n\r\n"))
        except (asyncio.IncompleteReadError, TimeoutError):
            return  # the client left, or was too slow, before finishing its request
        except asyncio.LimitOverrunError:
            writer.write(_Reply("431 Request Header Fields Too Large", b"too large\n").encode())
            writer.write_eof()
            await self._in_time(_discard(reader, LINGER_BYTES))
            return
        reply = await self._answer(head)
        writer.write(reply.encode(head_only=head.startswith(b"HEAD ")))
        await self._in_time(writer.drain())

    async def _in_time(self, aw: Coroutine[Any, Any, _T]) -> _T:
        return await _within(self._clock, self._clock.monotonic_ms() + self._timeout_ms, aw)

    async def _answer(self, head: bytes) -> _Reply:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _Reply("400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1]
        if method not in (b"GET", b"HEAD"):
            return _Reply("405 Method Not Allowed", b"GET or HEAD\n", allow="GET, HEAD")
        if target.split(b"?", 1)[0] != PATH.encode():
            return _Reply("404 Not Found", f"metrics are at {PATH}\n".encode())
        try:
            body = await self._render()
        except Exception:
            log.exception("rendering metrics for a scrape failed")
            return _Reply("500 Internal Server Error", b"rendering metrics failed\n")
        return _Reply("200 OK", body, self._content_type)


@dataclass(frozen=True)
class _Reply:
    status: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    allow: str | None = None

    def encode(self, *, head_only: bool = False) -> bytes:
        allow = "" if self.allow is None else f"Allow: {self.allow}\r\n"
        head = (
            f"HTTP/1.1 {self.status}\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            f"{allow}"
            "Connection: close\r\n\r\n"
        )
        return head.encode("ascii") + (b"" if head_only else self.body)


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    while limit > 0:
        chunk = await reader.read(min(limit, 64 * 1024))
        if not chunk:
            return
        limit -= len(chunk)


async def _within(clock: Clock, deadline_ms: int, aw: Coroutine[Any, Any, _T]) -> _T:
    """The result of ``aw``, or TimeoutError (and ``aw`` cancelled) at the monotonic deadline."""
    task = asyncio.ensure_future(aw)
    try:
        while not task.done():
            timer = asyncio.ensure_future(clock.sleep_until(deadline_ms))
            try:
                await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
            # ``sleep_until`` may return a little early; only the clock says the time is up.
            if not task.done() and clock.monotonic_ms() >= deadline_ms:
                raise TimeoutError
        return task.result()
    finally:
        task.cancel()


async def write_textfile_forever(
    path: Path, interval_ms: int, render: Render, clock: Clock
) -> None:
    """Rewrite ``path`` every ``interval_ms`` until cancelled; a failed round is logged, not fatal.

    A metrics file that cannot be written (full disk, missing directory) must never take the
    scheduler down; node_exporter's ``node_textfile_mtime_seconds`` tells the operator the file
    went stale. The write runs in a thread because ``fsync`` can block for seconds on a busy disk,
    and the event loop it would block is the dispatcher's.
    """
    failing = False
    while True:
        try:
            await asyncio.to_thread(write_atomically, path, await render())
        except OSError as exc:
            log.error(
                "cannot write the metrics textfile %s (%s); retrying in %d ms",
                path,
                exc.strerror or exc,
                interval_ms,
            )
            failing = True
        except Exception:
            log.exception("rendering metrics for %s failed; retrying in %d ms", path, interval_ms)
            failing = True
        else:
            if failing:
                log.info("metrics textfile %s written again", path)
            failing = False
        await clock.sleep_until(clock.monotonic_ms() + interval_ms)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` so that a reader sees the old file or the new one, never a partial one.

    The temporary name is hidden and does not end in ``.prom``, so the textfile collector never
    reads it. The file is fsynced before the rename, so a crash cannot leave an empty file under
    the real name; the directory is not (after a power loss the previous file is still whole).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
