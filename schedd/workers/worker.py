"""One Python worker process as the pool sees it: its process, its state, its control channel.

Split from :mod:`schedd.workers.pool` so the channel discipline (STYLE: workers are distrusted)
is one small class: every message must have been asked for with :meth:`Worker.expect`; anything
else, and any bad frame, resolves ``broken`` and stops reading. The pool decides what a broken
worker means for its run.
"""

from __future__ import annotations

import asyncio
import enum
import os
import socket
from collections import deque
from typing import Any

from schedd.workers import pyworker
from schedd.workers.output import OutputTail
from schedd.workers.pyworker import FrameReader, ProtocolError
from schedd.workers.spawn import Child


class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    #: Retiring or being killed: no longer counted, not yet reaped.
    LEAVING = "leaving"


class Worker:
    """One worker process and its control channel, read as frames arrive.

    Every message must have been asked for with :meth:`expect`; anything else, and any bad
    frame, resolves ``broken`` and stops reading: the worker is beyond trust from then on.
    """

    def __init__(self, child: Child, sock: socket.socket, startup: OutputTail) -> None:
        self._loop = asyncio.get_running_loop()
        self.child = child
        self.state = WorkerState.STARTING
        self.startup_output = startup
        self.broken: asyncio.Future[None] = self._loop.create_future()
        self.problem = ""
        #: ``broken`` because the channel closed (the worker may just be dying).
        self.hung_up = False
        #: Whether it ever reported ready (only such workers are replaced when lost).
        self.was_ready = False
        #: Launched for the pool (prescale, replacement), not for a run that waits for it.
        self.spare = False
        #: Set once the process is reaped (and its pidfd closed: never twice).
        self.returncode: int | None = None
        self.tasks = 0
        self.idle_since = 0
        self._sock = sock
        self._reader = FrameReader()
        self._inbox: deque[dict[str, Any]] = deque()
        self._arrival: asyncio.Future[None] | None = None
        sock.setblocking(False)
        self._reading = True
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self.ready = self.expect()

    @property
    def healthy(self) -> bool:
        """Not known to be dead or broken, asking the kernel rather than waiting for the pidfd
        callback: a run must not be handed a worker that died a moment ago."""
        if self.child.exited.done() or self.broken.done():
            return False
        # WNOWAIT: look without reaping; the unreaped leader keeps pinning the group id.
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.child.pid, flags) is None

    def expect(self) -> asyncio.Future[None]:
        """Resolved when the next message arrives; :meth:`take` it then."""
        self._arrival = self._loop.create_future()
        return self._arrival

    def take(self) -> dict[str, Any]:
        return self._inbox.popleft()

    def send(self, frame: bytes) -> asyncio.Task[None] | None:
        """Send ``frame``: ``None`` once all of it is in the socket's buffer, as a run's frame
        nearly always is at once (a task and a wait for it per run were a visible share of a
        no-op run's cost), else the task sending the rest, which must have finished or been
        cancelled before the socket closes. A failure breaks the channel."""
        try:
            sent = self._sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._break(f"control channel failed: {exc}", hung_up=True)
            return None
        if sent == len(frame):
            return None
        return asyncio.ensure_future(self._send_rest(memoryview(frame)[sent:]))

    async def _send_rest(self, rest: memoryview) -> None:
        try:
            await self._loop.sock_sendall(self._sock, rest)
        except OSError as exc:
            self._break(f"control channel failed: {exc}", hung_up=True)

    def hang_up(self) -> None:
        """Close our end: a worker reading its channel takes the EOF as the order to exit."""
        self._stop_reading()
        self._sock.close()

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(pyworker.READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._break(f"control channel failed: {exc}", hung_up=True)
            return
        if not data:
            cut = " in the middle of a frame" if self._reader.partial else ""
            self._break(f"closed its control channel{cut}", hung_up=True)
            return
        try:
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            self._break(str(exc))
            return
        for message in messages:
            if self._arrival is None or self._arrival.done():
                self._break(f"sent an unexpected {message['type']!r:.40} message")
                return
            self._inbox.append(message)
            self._arrival.set_result(None)

    def _break(self, problem: str, *, hung_up: bool = False) -> None:
        self._stop_reading()
        if not self.broken.done():
            self.problem, self.hung_up = problem, hung_up
            self.broken.set_result(None)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())
