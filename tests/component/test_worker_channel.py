"""A worker's control channel (schedd/workers/worker.py): sending a run's frame.

A frame is written straight into the socket when it fits, with no task; one larger than the
socket's buffer is finished by a task, and the worker on the other end reads it whole either
way. Driven over a real socket pair, the pool's end as the pool holds it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import cast

import pytest

from schedd.workers.output import OutputTail
from schedd.workers.spawn import Child
from schedd.workers.worker import Worker


@pytest.fixture
def channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setblocking(False)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def worker(sock: socket.socket) -> Worker:
    # The channel does not touch the process: no child is needed to send.
    return Worker(cast(Child, None), sock, OutputTail(0))


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        assert chunk, "the channel closed early"
        data += chunk
    return data


async def test_a_frame_that_fits_is_in_the_socket_when_send_returns(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = channel
    w = worker(ours)
    assert w.send(b"frame-1") is None
    assert theirs.recv(100) == b"frame-1"  # non-blocking: it is there already
    assert not w.broken.done()
    w.hang_up()


async def test_a_frame_larger_than_the_buffer_is_finished_by_a_task(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = channel
    w = worker(ours)
    frame = bytes(range(256)) * 4096  # 1 MiB, far beyond the 4 KiB buffer
    sending = w.send(frame)
    assert sending is not None
    assert not sending.done()
    assert await read_exactly(theirs, len(frame)) == frame
    await sending
    assert not w.broken.done()
    w.hang_up()


async def test_a_send_on_a_closed_channel_breaks_the_worker(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = channel
    w = worker(ours)
    theirs.close()
    assert w.send(b"frame") is None
    assert w.broken.done()
    assert w.hung_up
    assert w.problem.startswith("control channel failed")
