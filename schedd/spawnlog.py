"""The spawn journal: which process groups exist before the store knows about them.

A run's process identity (pid, pgid, start time) is committed with its ``running`` row, so
recovery can kill whatever a crashed daemon left running before it re-runs the firing with
attempt + 1. Between the spawn and that commit, though, the process exists and the store does not
know it: a daemon killed in that window would leave attempt 1 running beside attempt 2, the one
duplicate the write-ahead design forbids (two runs of one key at once). The crash harness
(``after_spawn_before_running_row=kill``) proves the window is real.

So each identity is appended to a small file *synchronously*, right after the spawn returns and
before the first ``await``: a plain ``write(2)`` to an ``O_APPEND`` file. No fsync is needed: a
killed process loses nothing it wrote to the page cache, and a power loss takes the task's
processes down too. Recovery reads the file, kills every group that is still provably ours
(``kill_group_if_ours``: the leader's start time must match, so a reused pid is never hit) and
starts a new file. While running, lines whose run row has been committed are dead weight; the
file is rewritten with the pending ones only when it passes ``COMPACT_BYTES``. A Python pool
worker runs task after task under one identity: its line is written once, not once per run,
since a line still in the file is all recovery needs (a ``write(2)`` per run was ~3 % of a
no-op run).

What remains: the microseconds inside ``fork``/``exec`` before the spawn call returns a pid. Under
systemd (``KillMode=mixed``) the unit's cgroup is cleaned up on a crash regardless.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from schedd.smallcache import SmallCache
from schedd.workers.procs import ProcessIdentity

#: Rewrite the journal (keeping only pending spawns) past this size.
COMPACT_BYTES = 1 << 20


class SpawnJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        #: Spawns whose run row is not committed yet, by identity: a pool worker may have a
        #: second run handed to it before the first one's row is written.
        self._pending: dict[ProcessIdentity, int] = {}
        #: Identities whose line is in the current file (some of them: a few pool workers
        #: recur, commands' never do).
        self._written = SmallCache[ProcessIdentity, bool](entries=64)
        self._size = 0

    def leftovers(self) -> list[ProcessIdentity]:
        """The spawns a previous daemon recorded, for recovery to kill. The file is kept until
        :meth:`start`, so a daemon killed during recovery still finds them next time."""
        left: list[ProcessIdentity] = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text(errors="replace").splitlines():
                fields = line.split()
                if len(fields) == 3 and all(f.isdigit() for f in fields):
                    left.append(ProcessIdentity(*(int(f) for f in fields)))
        return left

    def start(self) -> None:
        """Begin a fresh journal (after recovery has dealt with the leftovers)."""
        self._reopen(truncate=True)

    def spawned(self, ident: ProcessIdentity) -> None:
        """Record a process group that exists now. Synchronous on purpose (see the module)."""
        self._pending[ident] = self._pending.get(ident, 0) + 1
        if self._written.get(ident):
            return
        self._append(ident)
        if self._size > COMPACT_BYTES:
            self._compact()

    def recorded(self, ident: ProcessIdentity) -> None:
        """Its run row is committed: the store knows it now."""
        left = self._pending.pop(ident, 0) - 1
        if left > 0:
            self._pending[ident] = left

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, ident: ProcessIdentity) -> None:
        assert self._fd is not None, "start() first"
        line = f"{ident.pid} {ident.pgid} {ident.start_ticks}\n".encode()
        self._size += os.write(self._fd, line)
        self._written.put(ident, True, 0)

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{i.pid} {i.pgid} {i.start_ticks}\n" for i in self._pending))
        os.replace(tmp, self.path)
        self._reopen(truncate=False)
        for ident in self._pending:
            self._written.put(ident, True, 0)

    def _reopen(self, *, truncate: bool) -> None:
        self.close()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self.path, flags | (os.O_TRUNC if truncate else 0), 0o600)
        self._written.clear()
        self._size = os.fstat(self._fd).st_size
