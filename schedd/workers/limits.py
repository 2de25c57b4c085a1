"""Per-task rlimits, applied without ``preexec_fn``.

The daemon is threaded (the store's reader and commit threads), and code between ``fork`` and
``exec`` in a threaded process may deadlock on a lock another thread held at fork time, so
``preexec_fn`` is out. Command tasks are started through util-linux's ``prlimit``, which sets
the limits on itself and then execs the command: same pid, same process group, no window in
which the command runs unlimited. Python tasks get theirs from the single-threaded worker that
runs them (``pyworker.py``).

``RLIMIT_CORE`` is 0 unless configured: a segfaulting task must not fill the disk with cores.
If ``prlimit`` is missing the limits are set on the running process with ``prlimit(2)`` right
after spawn: a short window unlimited, logged once.

**Most tasks need no ``prlimit``.** Its ``exec`` was a third of the cost of running
``/bin/true``, only to say "no core dumps". So the daemon makes that its own *soft* limit
(:meth:`LimitedLauncher.inherit_defaults`, at start-up), every child inherits it, and a task
with no limits of its own is spawned directly. The hard limit stays as the daemon got it: such
a task could raise its soft limit again itself, as under any shell; a task with limits
configured still goes through ``prlimit``, which sets both. The daemon itself dumps no core
either, which a service that keeps its state in SQLite loses nothing by.

Going through ``prlimit`` moves the ``exec`` of the task into another program, whose failure
("no such file") would arrive as an exit status 127 with a message in the output instead of a
clear spawn error. So :func:`resolve_program` looks the program up first, as ``execvp`` would
(the task's ``PATH``, relative to its ``cwd``), and hands ``prlimit`` an absolute path.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
from collections.abc import Mapping

from schedd.model import NO_LIMITS, Limits

log = logging.getLogger("schedd.workers")

_SEARCH = "/usr/bin:/bin:/usr/sbin:/sbin"


def rlimits(limits: Limits) -> dict[int, tuple[int, int]]:
    """``{RLIMIT_*: (soft, hard)}`` for ``limits``; CPU gets one second of SIGXCPU grace."""
    out = {resource.RLIMIT_CORE: (limits.core_bytes, limits.core_bytes)}
    if limits.memory_bytes is not None:
        out[resource.RLIMIT_AS] = (limits.memory_bytes, limits.memory_bytes)
    if limits.cpu_seconds is not None:
        out[resource.RLIMIT_CPU] = (limits.cpu_seconds, limits.cpu_seconds + 1)
    if limits.open_files is not None:
        out[resource.RLIMIT_NOFILE] = (limits.open_files, limits.open_files)
    return out


_OPTION = {
    resource.RLIMIT_CORE: "--core",
    resource.RLIMIT_AS: "--as",
    resource.RLIMIT_CPU: "--cpu",
    resource.RLIMIT_NOFILE: "--nofile",
}


class LimitedLauncher:
    """Wraps an argv so it starts under its rlimits (or applies them just after spawn)."""

    def __init__(self, prlimit: str | None = None, *, inherit_defaults: bool = False) -> None:
        self._prlimit = prlimit or shutil.which("prlimit", path=_SEARCH)
        if self._prlimit is None:
            log.warning("prlimit(1) not found: task rlimits are applied just after spawn")
        self._defaults_inherited = False
        if inherit_defaults:
            self.inherit_defaults()

    def inherit_defaults(self) -> None:
        """Make :data:`NO_LIMITS` (no core dumps) this process's soft limit, so children
        inherit it and a task without limits is spawned without ``prlimit`` (see the module)."""
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (NO_LIMITS.core_bytes, hard))
        self._defaults_inherited = True

    def _inherited(self, limits: Limits) -> bool:
        return self._defaults_inherited and limits == NO_LIMITS

    def argv(self, argv: tuple[str, ...], limits: Limits) -> tuple[str, ...]:
        if self._prlimit is None or self._inherited(limits):
            return argv
        opts = [f"{_OPTION[r]}={soft}:{hard}" for r, (soft, hard) in rlimits(limits).items()]
        return (self._prlimit, *opts, "--", *argv)

    def after_spawn(self, pid: int, limits: Limits) -> None:
        if self._prlimit is not None or self._inherited(limits):
            return
        for r, pair in rlimits(limits).items():
            resource.prlimit(pid, r, pair)


def resolve_program(program: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The absolute path ``execvp`` would run for ``program``, or the ``OSError`` it would raise.

    Raises ``ENOENT`` if no candidate exists and ``EACCES`` if one exists but is not executable.
    """
    base = cwd or os.getcwd()
    if "/" in program:
        candidates = [os.path.join(base, program)]
    else:
        dirs = env.get("PATH", os.defpath).split(os.pathsep)
        candidates = [os.path.join(base, d or ".", program) for d in dirs]
    denied = False
    for path in candidates:
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return os.path.normpath(path)
            denied = True
    code = errno.EACCES if denied else errno.ENOENT
    raise OSError(code, os.strerror(code), program)
