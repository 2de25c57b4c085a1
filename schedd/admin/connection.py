"""One admin connection: read a line, answer it, repeat — in order, within limits.

The server (``schedd.admin.server``) owns the socket file and the connection count; this module
owns everything that happens on one accepted connection, and hands each decoded
:class:`~schedd.admin.protocol.Request` with its :class:`~schedd.admin.protocol.Peer` to the
handler coroutine. Authorization and the operations live behind that handler
(``schedd.admin.ops``).

In order
    Each connection is one task that reads a line, answers it, and reads the next, so answers
    come back in request order and a client can pipeline. While a handler runs, the connection
    keeps reading ahead one line, which is how it notices the client leaving:

    * the client closed its socket (``close()``; the kernel reports ``POLLHUP``): the handler
      is cancelled — a ``wait`` for a vanished client must not hold a slot for an hour;
    * the client only shut down its sending side (``shutdown(SHUT_WR)``, what ``socat`` does at
      the end of its input): the requests already received are still answered, then the
      connection closes. This is what makes ``echo '{"op": "status"}' | socat - UNIX:…`` work.

Limits
    * ``max_request_bytes`` caps a line (not counting its newline). A longer line is answered
      with ``too_large`` and the connection is **closed**: once the reader has thrown away part
      of a line, the rest of it cannot be told apart from the next request, so resynchronising
      would execute the tail of an oversized request as if it were one (reliability-plan §2.1).
      The stream reader (created by the server with ``limit=max_request_bytes``) stops
      buffering at about twice the cap, so a 1 GB line costs no memory.
    * ``idle_timeout_ms``: a connection must deliver a complete request within this long after
      connecting or after its previous answer, else it is closed silently. Partial bytes do not
      reset the timer (a client trickling one byte a second is still idle), and no timer runs
      while a request is being handled, so a slow ``wait`` is never cut off. A client that does
      not read its answer within the same time is dropped too.
    All timers go through the injected :class:`~schedd.clock.Clock`.

Errors
    A line that fails to decode gets an ``invalid_argument`` answer (with its id when one could
    be read) and the connection stays usable. A handler's ``ScheddError`` becomes an answer with
    its code; any other exception is logged with its traceback on ``schedd.admin`` and answered
    ``internal`` — never a dead connection task. A request in flight when the connection is
    cancelled (the server closing) gets ``unavailable`` ("shutting down") first.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import struct
from asyncio.trsock import TransportSocket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from schedd import errors
from schedd.admin.protocol import (
    Peer,
    Request,
    decode_request,
    decode_request_id,
    encode_response_error,
    encode_response_ok,
)
from schedd.clock import Clock

Handler = Callable[[Request, Peer], Awaitable[Any]]

log = logging.getLogger("schedd.admin")

_PEERCRED = struct.Struct("3i")
_NEWLINE = b"\n"
INTERNAL_MESSAGE = "internal error; see the daemon log"

_T = TypeVar("_T")


class Connection:
    """One client: read a line, answer it, repeat (module docstring: "In order")."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler,
        clock: Clock,
        idle_timeout_ms: int,
        max_request_bytes: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._clock = clock
        self._idle_timeout_ms = idle_timeout_ms
        self._limit = max_request_bytes
        self._sock: TransportSocket = writer.get_extra_info("socket")
        pid, uid, gid = _PEERCRED.unpack(
            self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        self._peer = Peer(pid=pid, uid=uid, gid=gid)
        #: The next line, read ahead while a handler runs; None when no read is pending.
        self._ahead: asyncio.Task[bytes] | None = None

    async def serve(self) -> None:
        idle_since = self._clock.monotonic_ms()
        try:
            while True:
                line = await self._next_line(idle_since + self._idle_timeout_ms)
                if line is None:
                    return
                if not line.strip():
                    continue
                response = await self._answer(line)
                if response is None:
                    return
                # Taken before the write, so a client that has read its answer knows the idle
                # timer has started.
                idle_since = self._clock.monotonic_ms()
                if not await self._send(response):
                    return
        finally:
            if self._ahead is not None:
                self._ahead.cancel()

    def _read_ahead(self) -> asyncio.Task[bytes]:
        if self._ahead is None:
            self._ahead = asyncio.create_task(self._reader.readuntil(_NEWLINE))
        return self._ahead

    async def _next_line(self, deadline_ms: int) -> bytes | None:
        """The next request line; None when the connection should close."""
        read = self._read_ahead()
        if not await self._done_by(read, deadline_ms):
            log.debug("admin connection from pid %d closed: idle", self._peer.pid)
            return None
        self._ahead = None
        try:
            return read.result()
        except asyncio.IncompleteReadError as eof:
            # An unterminated last line is still a request (`printf '{...}' | socat ...`).
            return eof.partial or None
        except asyncio.LimitOverrunError:
            log.warning(
                "admin request from pid %d uid %d over %d bytes; closing the connection",
                self._peer.pid,
                self._peer.uid,
                self._limit,
            )
            too_large = errors.TooLarge(
                f"request line exceeds max_request_bytes ({self._limit} bytes); the connection "
                "is closed. Pass large payloads by reference (an id or a path), not inline"
            )
            await self._send(encode_response_error(None, too_large))
            return None
        except OSError:  # reset by the peer, or the transport failed
            return None

    async def _answer(self, line: bytes) -> bytes | None:
        """The response line for ``line``; None if the client left before it was ready."""
        try:
            request = decode_request(line)
        except errors.ScheddError as err:
            return encode_response_error(decode_request_id(line), err)
        call = asyncio.create_task(self._call(request))
        try:
            await asyncio.wait({call, self._read_ahead()}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done() and self._client_gone():
                log.debug("admin client pid %d left during %r", self._peer.pid, request.op)
                call.cancel()
                await asyncio.wait({call})
                return None
            return await call
        except asyncio.CancelledError:
            call.cancel()
            await asyncio.wait({call})
            self._writer.write(encode_response_error(request.id, _shutting_down(request.op)))
            raise

    async def _call(self, request: Request) -> bytes:
        try:
            result = await self._handler(request, self._peer)
            return encode_response_ok(request.id, result)
        except errors.ScheddError as err:
            return encode_response_error(request.id, err)
        except Exception:
            log.exception(
                "admin op %r (id %r) from pid %d uid %d failed",
                request.op,
                request.id,
                self._peer.pid,
                self._peer.uid,
            )
            return encode_response_error(request.id, errors.ScheddError(INTERNAL_MESSAGE))

    def _client_gone(self) -> bool:
        """The read-ahead hit the end of the stream and the peer has closed, not just shut down."""
        ahead = self._ahead
        if ahead is None or not ahead.done():
            return False
        exc = ahead.exception()
        if isinstance(exc, OSError):
            return True
        return isinstance(exc, asyncio.IncompleteReadError) and _hung_up(self._sock)

    async def _send(self, response: bytes) -> bool:
        """Write one line; False if the client is gone or has not read it in time."""
        self._writer.write(response)
        if self._writer.transport.get_write_buffer_size() == 0:
            return True
        drain = asyncio.create_task(self._writer.drain())
        if not await self._done_by(drain, self._clock.monotonic_ms() + self._idle_timeout_ms):
            log.debug("admin client pid %d is not reading; dropping it", self._peer.pid)
            return False
        return drain.exception() is None

    async def _done_by(self, task: asyncio.Task[_T], deadline_ms: int) -> bool:
        """Wait for ``task`` until the monotonic deadline: True if it finished, else cancel it."""
        while not task.done():
            timer = asyncio.create_task(self._clock.sleep_until(deadline_ms))
            try:
                await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
            if not task.done() and self._clock.monotonic_ms() >= deadline_ms:
                task.cancel()
                return False
        return True


def _shutting_down(op: str) -> errors.Unavailable:
    return errors.Unavailable(
        f"schedd is shutting down; op {op!r} was interrupted and may not have taken effect"
    )


def _hung_up(sock: TransportSocket) -> bool:
    """True once both directions are shut, i.e. the peer called close() (Linux ``POLLHUP``).

    A zero-timeout poll: it never blocks the loop.
    """
    fd = sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & select.POLLHUP for _, events in poller.poll(0))
