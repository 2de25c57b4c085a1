"""The admin socket: a Unix stream server speaking newline-delimited JSON.

This module owns the transport only — framing, limits, peer credentials, timeouts, the socket
file — and hands each decoded :class:`~schedd.admin.protocol.Request` with its
:class:`~schedd.admin.protocol.Peer` to one handler coroutine. Authorization and the operations
live behind that handler (``schedd.admin.ops``).

The socket file
    ``start()`` never steals a live socket and never leaves one more open than ``mode``. An
    existing path is probed with a non-blocking ``connect()``: an answer means another daemon
    is serving (``Unavailable``), ``ECONNREFUSED`` means a stale file from a crash, which is
    removed; a path that is not a socket at all is never touched (``Conflict``). The socket is
    bound under a umask that leaves it owner-only, then given its group, then ``mode`` — so at no
    instant can anyone outside the final owner/group connect. ``close()`` unlinks the file only
    if it still has the inode we bound: a second daemon that replaced it keeps its socket.

One connection, in order
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
      The stream reader stops buffering at about twice the cap, so a 1 GB line costs no memory.
    * ``idle_timeout_ms``: a connection must deliver a complete request within this long after
      connecting or after its previous answer, else it is closed silently. Partial bytes do not
      reset the timer (a client trickling one byte a second is still idle), and no timer runs
      while a request is being handled, so a slow ``wait`` is never cut off. A client that does
      not read its answer within the same time is dropped too.
    * ``max_connections``: one more gets a single ``unavailable`` line and is closed at once.
    All timers go through the injected :class:`~schedd.clock.Clock`.

Errors
    A line that fails to decode gets an ``invalid_argument`` answer (with its id when one could
    be read) and the connection stays usable. A handler's ``ScheddError`` becomes an answer with
    its code; any other exception is logged with its traceback on ``schedd.admin`` and answered
    ``internal`` — never a dead connection task, never a dead server. Requests in flight when
    the server closes get ``unavailable`` ("shutting down") before their connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import select
import socket
import stat
import struct
from asyncio.trsock import TransportSocket
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

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

#: sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
_PEERCRED = struct.Struct("3i")
_NEWLINE = b"\n"
INTERNAL_MESSAGE = "internal error; see the daemon log"

_T = TypeVar("_T")


class AdminServer:
    """Serves the admin socket at ``path`` until :meth:`close`; an async context manager."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        mode: int = 0o660,
        group: str | None = None,
        max_request_bytes: int = 1 << 20,
        idle_timeout_ms: int = 300_000,
        max_connections: int = 64,
        clock: Clock,
    ) -> None:
        if not 0 <= mode <= 0o777:
            raise errors.InvalidArgument(f"admin socket mode {mode:#o} is not a permission mode")
        self._path = Path(path)
        self._handler = handler
        self._mode = mode
        self._group = group
        self._max_request_bytes = max_request_bytes
        self._idle_timeout_ms = idle_timeout_ms
        self._max_connections = max_connections
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections holding a slot (max_connections); each is released exactly once.
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def path(self) -> Path:
        return self._path

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("AdminServer.start() called twice")
        gid = _resolve_group(self._group)
        _check_path_length(self._path)
        _remove_stale_socket(self._path)
        sock = _bind(self._path, self._mode, gid)
        st = os.stat(self._path)
        self._inode = (st.st_dev, st.st_ino)
        try:
            self._server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=self._max_request_bytes
            )
        except BaseException:
            sock.close()
            self._unlink_if_ours()
            raise
        log.info("admin socket listening on %s (mode %#o)", self._path, self._mode)

    async def close(self) -> None:
        """Stop accepting, interrupt requests in flight, close every connection, remove the file.

        One gap, in asyncio rather than here: a connection asyncio accepted from the kernel but
        had not yet handed over when the listening socket closed fails its transport creation
        (CPython 3.11 asserts in ``Server._attach``, logged only in debug mode) and its socket is
        closed only when garbage-collected. The daemon is exiting by then.
        """
        server, self._server = self._server, None
        if server is None:
            return
        # Unlink while still bound: our listening socket pins the inode, so an equal inode
        # number really is our file and not a newer one that reused the number.
        self._unlink_if_ours()
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _unlink_if_ours(self) -> None:
        if self._inode is None:
            return
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self._path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self._path)
        self._inode = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback that creates our own task: asyncio's wrapper task for a coroutine
        # callback reports cancellation (our close()) as an error in a done-callback.
        if len(self._writers) >= self._max_connections:
            log.warning("admin connection refused: %d connections open", len(self._writers))
            busy = errors.Unavailable(
                f"too many admin connections (max_connections = {self._max_connections}); "
                "try again later"
            )
            writer.write(encode_response_error(None, busy))
            writer.close()
            return
        self._writers.add(writer)
        task = asyncio.create_task(self._run_connection(reader, writer))
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            # Also covers a task cancelled by close() before it ever ran its finally clause.
            self._tasks.discard(task)
            self._release(writer)

        task.add_done_callback(done)

    def _release(self, writer: asyncio.StreamWriter) -> None:
        if writer in self._writers:
            self._writers.discard(writer)
            writer.close()

    async def _run_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            connection = _Connection(
                reader,
                writer,
                self._handler,
                self._clock,
                self._idle_timeout_ms,
                self._max_request_bytes,
            )
            await connection.serve()
        except Exception:
            log.exception("admin connection failed")
        finally:
            # Free the slot as we close, so a client that reconnects after seeing our close
            # always finds the slot free.
            self._release(writer)
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _Connection:
    """One client: read a line, answer it, repeat (module docstring: "One connection")."""

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


def _resolve_group(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise errors.InvalidArgument(f"admin socket group {group!r} does not exist") from None


def _check_path_length(path: Path) -> None:
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise errors.InvalidArgument(
            f"admin socket path {path} is {size} bytes, over the {MAX_SOCKET_PATH_BYTES}-byte "
            "limit for Unix socket paths"
        )


def _remove_stale_socket(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise errors.Conflict(
            f"{path} exists and is not a socket; refusing to replace it "
            "(remove it, or set admin.socket to another path)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # connect() on AF_UNIX then never waits (EAGAIN if backlog full)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale admin socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except BlockingIOError:
        pass  # a listener with a full backlog is still a listener
    except OSError as exc:
        raise errors.Unavailable(
            f"cannot check whether a daemon is listening on {path}: {exc.strerror}"
        ) from None
    finally:
        probe.close()
    raise errors.Unavailable(f"another daemon is listening on {path}")


def _bind(path: Path, mode: int, gid: int | None) -> socket.socket:
    """Bind ``path`` owner-only, then set its group, then ``mode``: never more open than asked."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        old_umask = os.umask(0o777 & ~(mode & 0o700))
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        bound = True
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        if bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        reason = (
            "another daemon is listening there" if exc.errno == errno.EADDRINUSE else exc.strerror
        )
        raise errors.Unavailable(f"cannot create admin socket {path}: {reason}") from None
    return sock
