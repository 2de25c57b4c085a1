"""A worker's control channel (schedd/workers/worker.py): sending a run's frame.

A frame is written straight into the socket when it fits, with no task; one larger than the
socket's buffer is finished by a task, and the worker on the other end reads it whole either
way. Driven over a real socket pair, the pool's end as the pool holds it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import cast

import pytest

from schedd.workers.output import OutputTail
from schedd.workers.spawn import Child
from schedd.workers.worker import Worker


@pytest.fixture
async def channel() -> AsyncIterator[tuple[Worker, socket.socket]]:
    """A worker as the pool holds it (its end with a 4 KiB send buffer), and the worker
    process's end. The channel does not touch the process: no child is needed to send."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setblocking(False)
    w = Worker(cast(Child, None), ours, OutputTail(0))
    try:
        yield w, theirs
    finally:
        w.hang_up()  # stops reading and closes our end
        theirs.close()


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        assert chunk, "the channel closed early"
        data += chunk
    return data


async def test_a_frame_that_fits_is_in_the_socket_when_send_returns(
    channel: tuple[Worker, socket.socket],
) -> None:
    w, theirs = channel
    assert w.send(b"frame-1") is None
    assert theirs.recv(100) == b"frame-1"  # non-blocking: it is there already
    assert not w.broken.done()


async def test_a_frame_larger_than_the_buffer_is_finished_by_a_task(
    channel: tuple[Worker, socket.socket],
) -> None:
    w, theirs = channel
    frame = bytes(range(256)) * 4096  # 1 MiB, far beyond the 4 KiB buffer
    sending = w.send(frame)
    assert sending is not None
    assert not sending.done()
    assert await read_exactly(theirs, len(frame)) == frame
    await sending
    assert not w.broken.done()


async def test_a_send_on_a_closed_channel_breaks_the_worker(
    channel: tuple[Worker, socket.socket],
) -> None:
    w, theirs = channel
    theirs.close()
    assert w.send(b"frame") is None
    assert w.broken.done()
    assert w.hung_up
    assert w.problem.startswith("control channel failed")
