"""Task functions the worker-pool tests run in real workers (imported there as ``tests.pytasks``).

They report what they saw on stdout, which the pool captures as the run's output: the tests
read it back from the result, so nothing here needs a side channel.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Any

_hoard: list[bytes | bytearray] = []


def echo(*args: Any, **kwargs: Any) -> None:
    print(json.dumps({"args": list(args), "kwargs": kwargs}))


async def async_echo(text: str) -> None:
    await asyncio.sleep(0)
    print(f"async {text}")


def returns_coroutine(text: str) -> Any:
    """A plain function that hands back a coroutine: the worker runs it too."""
    return async_echo(text)


def show_context(context: Any) -> None:
    at = context.scheduled_for
    print(
        json.dumps(
            {
                "key": context.idempotency_key,
                "scheduled_for": at.isoformat(),
                "utc": at.utcoffset().total_seconds() == 0,
                "attempt": context.attempt,
                "schedule": context.schedule,
            }
        )
    )


def pid() -> None:
    print(os.getpid())


def boom(message: str) -> None:
    print("before the failure")
    raise ValueError(message)


def exit_with(code: int | None) -> None:
    sys.exit(code)


def segfault() -> None:
    print("about to crash", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def hard_exit(code: int) -> None:
    os._exit(code)


def spawn_and_sleep() -> None:
    """Leave a grandchild and a great-grandchild in the group, say their pids, then hang."""
    sh = subprocess.Popen(
        ["sh", "-c", "sleep 100 & echo $!; exec sleep 100"], stdout=subprocess.PIPE
    )
    assert sh.stdout is not None
    background = int(sh.stdout.readline())
    print(sh.pid, background, flush=True)
    time.sleep(100)


def write_to_control_channel() -> None:
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            os.write(int(fd), b"garbage, not a frame")


def flood(total: int) -> None:
    """``total`` bytes of numbered lines to stderr, unbuffered."""
    chunk = b"".join(b"%09d\n" % i for i in range(10_000))  # 100 000 bytes
    written = 0
    while written < total:
        piece = chunk[: total - written]
        os.write(2, piece)
        written += len(piece)


def flood_forever() -> None:
    chunk = b"x" * 65536
    while True:
        os.write(2, chunk)


def burn_cpu() -> None:
    while True:
        pass


def allocate(nbytes: int) -> None:
    _hoard.append(bytearray(nbytes))
    print("allocated")


def hoard(nbytes: int) -> None:
    """Keep ``nbytes`` of touched memory alive in the worker after the task."""
    _hoard.append(b"\1" * nbytes)


def core_limit() -> None:
    print(resource.getrlimit(resource.RLIMIT_CORE)[0])


def environ(*names: str) -> None:
    print(json.dumps({name: os.environ.get(name) for name in names}))


def write_many(text: str, times: int) -> None:
    sys.stdout.write(text * times)


def rlimits() -> None:
    """The soft (and CPU hard) limits the task runs under."""
    names = {
        "as": resource.RLIMIT_AS,
        "nofile": resource.RLIMIT_NOFILE,
        "core": resource.RLIMIT_CORE,
    }
    soft = {name: resource.getrlimit(which)[0] for name, which in names.items()}
    cpu_soft, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    print(json.dumps({**soft, "cpu": cpu_soft, "cpu_hard": cpu_hard}))
