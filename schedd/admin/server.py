"""The admin socket: a Unix stream server speaking newline-delimited JSON.

This module owns the socket's lifecycle — the socket file, accepting, the connection cap,
shutting down — and hands each accepted connection to :class:`~schedd.admin.connection.Connection`,
which owns framing, limits and answering (see that module). Authorization and the operations live
behind the handler (``schedd.admin.ops``).

The socket file
    ``start()`` never steals a live socket and never leaves one more open than ``mode``. An
    existing path is probed with a non-blocking ``connect()``: an answer means another daemon
    is serving (``Unavailable``), ``ECONNREFUSED`` means a stale file from a crash, which is
    removed; a path that is not a socket at all is never touched (``Conflict``). The socket is
    bound under a umask that leaves it owner-only, then given its group, then ``mode`` — so at no
    instant can anyone outside the final owner/group connect. ``close()`` unlinks the file only
    if it still has the inode we bound: a second daemon that replaced it keeps its socket.

Connections
    One connection is accepted per turn of the event loop, never a batch. The loop also runs the
    dispatcher, and every hop of a firing (timer, commit, spawn) waits for one full turn: with
    asyncio's own server, which accepts up to a whole listen queue (100) in one callback, five
    clients opening and closing connections in a tight loop made a 200 ms schedule start up to
    a second late and skip occurrences (``tests/integration/test_admin_safety.py``). Paced like
    this, a flood waits in the kernel's listen queue instead of in front of the scheduler.

    ``max_connections``: one more gets a single ``unavailable`` line and is closed at once. A
    connection task that fails is logged with its traceback on ``schedd.admin`` — never a dead
    server. ``close()`` cancels every connection, so requests in flight get ``unavailable``
    ("shutting down") before their connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import socket
import stat
from pathlib import Path
from types import TracebackType
from typing import Self

from schedd import errors
from schedd.admin.connection import Connection, Handler
from schedd.admin.protocol import encode_response_error
from schedd.clock import Clock

log = logging.getLogger("schedd.admin")

#: sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
#: The kernel's listen queue: clients beyond it wait in connect() (or get EAGAIN if non-blocking).
_BACKLOG = 100


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
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._inode: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections holding a slot (max_connections); each is released exactly once.
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def path(self) -> Path:
        return self._path

    async def start(self) -> None:
        if self._acceptor is not None:
            raise RuntimeError("AdminServer.start() called twice")
        gid = _resolve_group(self._group)
        _check_path_length(self._path)
        _remove_stale_socket(self._path)
        sock = _bind(self._path, self._mode, gid)
        st = os.stat(self._path)
        self._inode = (st.st_dev, st.st_ino)
        try:
            sock.listen(_BACKLOG)
        except OSError as exc:
            sock.close()
            self._unlink_if_ours()
            raise errors.Unavailable(f"cannot listen on {self._path}: {exc.strerror}") from None
        sock.setblocking(False)
        self._listener = sock
        self._acceptor = asyncio.create_task(self._accept_loop(sock))
        log.info("admin socket listening on %s (mode %#o)", self._path, self._mode)

    async def close(self) -> None:
        """Stop accepting, interrupt requests in flight, close every connection, remove the file.

        Clients still in the kernel's listen queue are reset when the listening socket closes.
        """
        acceptor, listener = self._acceptor, self._listener
        self._acceptor = self._listener = None
        if acceptor is None or listener is None:
            return
        # Unlink while still bound: our listening socket pins the inode, so an equal inode
        # number really is our file and not a newer one that reused the number.
        self._unlink_if_ours()
        acceptor.cancel()
        await asyncio.gather(acceptor, return_exceptions=True)
        listener.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept one connection per turn of the event loop (module docstring: "Connections")."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                # EMFILE and friends: the connection waits in the listen queue meanwhile.
                log.error("admin socket cannot accept (%s); retrying in 1s", exc)
                await self._clock.sleep_until(self._clock.monotonic_ms() + 1000)
                continue
            try:
                reader, writer = await asyncio.open_unix_connection(
                    sock=conn, limit=self._max_request_bytes
                )
            except OSError:
                conn.close()  # the client is already gone
                continue
            except BaseException:
                conn.close()
                raise
            self._accept(reader, writer)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            connection = Connection(
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
