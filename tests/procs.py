"""Proving that processes are gone, without sleeping.

A dead member of a group is a zombie until its parent (or init) reaps it, which in a container
can take seconds, so ``killpg(pgid, 0)`` alone would be a race, not a check: these helpers
await each process's pidfd instead, and accept a zombie as dead.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from schedd.workers.procs import process_identity


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            identity = process_identity(int(entry))
            if identity is not None and identity.pgid == pgid:
                members.append(identity.pid)
    return members


async def wait_dead(pids: list[int], within_s: float = 10.0) -> None:
    """Return once every pid has exited (zombies count as exited); fail after ``within_s``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within_s):
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit(f: asyncio.Future[None] = exited) -> None:
                if not f.done():
                    f.set_result(None)

            try:
                loop.add_reader(fd, on_exit)
                try:
                    await exited
                finally:
                    loop.remove_reader(fd)
            finally:
                os.close(fd)


async def assert_group_dies(pgid: int) -> None:
    await wait_dead(group_members(pgid))
    assert all(proc_state(pid) in {"Z", "gone"} for pid in group_members(pgid))


def proc_state(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()
