"""A blocking client for the admin socket, for ``schedctl`` and scripts.

``schedctl`` is a short synchronous program, so this is plain sockets, no event loop: connect,
write one request line, read one response line. Errors come back as the
:mod:`schedd.errors` class matching the response's ``code``, so callers handle a daemon error and
a local one the same way and ``schedctl`` turns either into the same exit status.

The failure that matters most to an operator is "the daemon is not there". A missing socket
file and a refused connection (a stale file left by a crash) both raise
:class:`~schedd.errors.DaemonNotRunning`, naming the path and how to start schedd; ``EACCES``
raises :class:`~schedd.errors.PermissionDenied` with the socket's owner, group and mode, which is
what the operator needs to fix it.

One connection is reused across calls. Before reusing it the client peeks at it without
blocking: if the daemon has closed it in the meantime (idle timeout, restart) it reconnects, so
a long-lived client never sends a request into a dead socket. Any failure in the middle of a
call closes the connection, because the stream's position is then unknown; the next call starts
afresh. ``timeout_s`` bounds each wait for the daemon (connecting, sending, each read); the
daemon writes an answer in one piece, so in practice it bounds the whole call.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
from collections.abc import Mapping
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any, Self

from schedd import errors

_ERRORS_BY_CODE: dict[str, type[errors.ScheddError]] = {
    cls.code: cls
    for cls in (
        errors.ScheddError,
        errors.InvalidArgument,
        errors.NotFound,
        errors.Conflict,
        errors.PermissionDenied,
        errors.TooLarge,
        errors.Unavailable,
    )
}
_READ_CHUNK = 64 * 1024


def error_for_code(code: str, message: str) -> errors.ScheddError:
    """The exception for a response's error ``code``; an unknown code (a newer daemon) keeps
    its name in the message and is treated as ``internal``."""
    cls = _ERRORS_BY_CODE.get(code)
    if cls is None:
        return errors.ScheddError(f"{message} (error code {code!r})")
    return cls(message)


class AdminClient:
    """One daemon connection, opened on the first call and reused; not thread-safe."""

    def __init__(self, path: Path, *, timeout_s: float | None = 30.0) -> None:
        self._path = Path(path)
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._next_id = 1

    def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | EllipsisType | None = ...,
    ) -> Any:
        """Send one request and return its ``result``, or raise the error it was answered with.

        ``timeout_s`` defaults to the client's; ``None`` waits for as long as the daemon takes.
        """
        timeout = self._timeout_s if isinstance(timeout_s, EllipsisType) else timeout_s
        request_id = self._next_id
        self._next_id += 1
        request = {"id": request_id, "op": op, "args": dict(args or {})}
        line = json.dumps(request, allow_nan=False, separators=(",", ":")).encode() + b"\n"
        sock = self._connection(timeout)
        try:
            sock.settimeout(timeout)
            self._send(sock, line)
            raw, leftover = self._read_line(sock, op, timeout)
        except BaseException:
            self.close()
            raise
        if leftover:
            self.close()  # more than one answer to one request: the stream is out of step
        return self._result(raw, request_id, op)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self, timeout: float | None) -> socket.socket:
        if self._sock is not None and not _still_open(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect(timeout)
        return self._sock

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(self._path))
        except FileNotFoundError:
            sock.close()
            raise self._not_running("the socket file does not exist") from None
        except ConnectionRefusedError:
            sock.close()
            raise self._not_running("connection refused: a stale socket file") from None
        except PermissionError:
            sock.close()
            raise errors.PermissionDenied(
                f"permission denied connecting to {self._path}{_describe_owner(self._path)}; "
                "run schedctl as a user the socket admits (see [admin] mode and group)"
            ) from None
        except TimeoutError:
            sock.close()
            raise errors.Unavailable(
                f"schedd on {self._path} did not accept the connection within {timeout} s"
            ) from None
        except OSError as exc:
            sock.close()
            raise errors.Unavailable(
                f"cannot connect to schedd on {self._path}: {exc.strerror or exc}"
            ) from None
        return sock

    def _not_running(self, reason: str) -> errors.DaemonNotRunning:
        return errors.DaemonNotRunning(
            f"no schedd is listening on {self._path} ({reason}); "
            "start it with `schedd run --config FILE`"
        )

    def _send(self, sock: socket.socket, line: bytes) -> None:
        try:
            sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            # The daemon may have answered before closing (a too_large line); read on.
            pass
        except TimeoutError:
            raise errors.Unavailable(
                f"schedd on {self._path} is not reading requests (timed out sending)"
            ) from None

    def _read_line(
        self, sock: socket.socket, op: str, timeout: float | None
    ) -> tuple[bytes, bytes]:
        buffer = bytearray()
        while True:
            try:
                chunk = sock.recv(_READ_CHUNK)
            except TimeoutError:
                raise errors.Unavailable(
                    f"no answer from schedd on {self._path} within {timeout} s (op {op!r})"
                ) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise errors.Unavailable(
                    f"schedd on {self._path} closed the connection without answering op {op!r}"
                )
            start = len(buffer)
            buffer += chunk
            end = buffer.find(b"\n", start)
            if end >= 0:
                return bytes(buffer[:end]), bytes(buffer[end + 1 :])

    def _result(self, raw: bytes, request_id: int, op: str) -> Any:
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("ok"), bool):
            self.close()
            raise errors.ScheddError(
                f"malformed answer from schedd on {self._path} to op {op!r}: {raw[:200]!r}"
            )
        # Errors raised before the daemon could read a request (too many connections, an
        # oversized line) carry a null id.
        answered_id = message.get("id")
        if answered_id != request_id and not (answered_id is None and not message["ok"]):
            self.close()
            raise errors.ScheddError(
                f"answer from schedd on {self._path} is for request {answered_id!r}, "
                f"not {request_id!r} (op {op!r})"
            )
        if message["ok"]:
            return message.get("result")
        error = message.get("error")
        if not isinstance(error, dict):
            error = {}
        raise error_for_code(str(error.get("code", "internal")), str(error.get("message", "")))


def _still_open(sock: socket.socket) -> bool:
    """Whether an idle connection can carry another request: nothing to read and no EOF."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # EOF, or bytes nobody asked for: either way the stream is unusable


def _describe_owner(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return " (its directory is not accessible either)"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f" (mode {st.st_mode & 0o777:04o}, owner {owner}, group {group})"
