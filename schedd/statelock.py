"""An exclusive lock on the store for the daemon's lifetime.

Two daemons on one store would double every firing, and SQLite 3.40 (this platform's) has a WAL
reset race with concurrent writers. ``flock`` is released by the kernel when the process dies,
however it dies, so a crashed daemon never leaves a stale lock; the pid written into the file is
only for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from schedd.errors import StateDirLocked


class StateLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirLocked(
                f"{self.path}: the store is in use by another schedd (pid {holder});"
                " stop it first, or point this one at another state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
