"""Starting a supervised process group and taking it down again: the one path every task takes.

Command tasks and Python pool workers are both started here, so they share one set of
guarantees (DESIGN §6, reliability plan §2.3):

* **Own session and group.** The process is started as the leader of a new session and process
  group (``start_new_session``; pgid == pid), so a signal to the group reaches the shell, its
  pipelines, background jobs and a Python task's subprocesses alike. ``preexec_fn`` is never
  used: the daemon has threads (the store's reader and commit threads) and a fork with threads may
  deadlock before exec. rlimits are applied by ``prlimit`` (commands) or by the single-threaded
  worker itself (Python tasks), never between fork and exec.
* **Exit is watched with a pidfd; the leader is reaped last.** asyncio's subprocess support
  reaps a child the moment it exits, on the child watcher's thread. That loses twice: a fast
  task's ``/proc`` entry may be gone before its start time is read (measured: 8 of 200 runs of
  ``true``), and once the leader is reaped its pid, the group's id, can be recycled while we
  still mean to signal leftovers. So the process is started with ``subprocess.Popen``, a pidfd
  reports the exit, and the zombie leader pins the group id until the last signal was sent.
* **Output** (stdout and stderr on one pipe, interleaved as a terminal would show them) is read
  as it arrives into a replaceable *sink* (an :class:`~schedd.workers.output.OutputTail`):
  O(tail) memory for any amount. The pipe is non-blocking and read with ``os.read`` from a
  loop reader rather than through a transport, so :meth:`Child.drain` can take *synchronously*
  everything written so far: a pool worker flushes its output before it reports a task done,
  so draining on that report attributes every byte to the right run.
* **Taking it down** (:func:`stop_group`): SIGTERM to the group, up to a grace for the leader to
  exit, then SIGKILL to whatever is left; the leader is reaped last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Protocol

from schedd.clock import Clock
from schedd.workers.procs import ProcessIdentity, process_identity, signal_group

#: Bytes per ``os.read`` of a child's output.
READ_CHUNK = 64 * 1024

#: How long to keep reading output after the group was killed; only a process that escaped the
#: group can hold the pipe open that long.
DRAIN_MS = 1_000


class Sink(Protocol):
    def feed(self, chunk: bytes) -> None: ...


class _Discard:
    def feed(self, chunk: bytes) -> None:
        pass


class Child:
    """A spawned process group leader: its ``Popen``, a pidfd reporting its exit, its output."""

    def __init__(self, proc: subprocess.Popen[bytes], pidfd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._proc = proc
        self._pidfd = pidfd
        self.pgid = proc.pid
        self.pid = proc.pid
        #: CPU time the leader used, known once it is reaped.
        self.cpu_ms: int | None = None
        self._identity: ProcessIdentity | None = None
        #: Where output goes; swap it to attribute output to another run.
        self.sink: Sink = _Discard()
        self.exited: asyncio.Future[None] = self._loop.create_future()
        self.eof: asyncio.Future[None] = self._loop.create_future()
        self._out = _stdout(proc).fileno()
        os.set_blocking(self._out, False)
        self._loop.add_reader(pidfd, self._on_exit)
        self._loop.add_reader(self._out, self.drain)

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        cwd: str | None,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> Child:
        """Fork and exec (synchronously, as asyncio itself does) and open the pidfd.

        Raises ``OSError``/``ValueError`` if the program cannot be started.
        """
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            close_fds=True,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:  # EMFILE: the process must not run unsupervised
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            _stdout(proc).close()
            raise
        return cls(proc, pidfd)

    def drain(self) -> None:
        """Feed the sink everything the pipe holds now, without blocking."""
        if self.eof.done():
            return
        while True:
            try:
                chunk = os.read(self._out, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:  # EIO and friends: treat as the end of the output
                chunk = b""
            if not chunk:
                self._loop.remove_reader(self._out)
                self.eof.set_result(None)
                return
            self.sink.feed(chunk)

    def identity(self) -> ProcessIdentity:
        """Read once: a pool worker reports it at every run, and it cannot change while the
        process is ours (unreaped, its pid cannot be reused)."""
        if self._identity is None:
            self._identity = process_identity(self._proc.pid)
        if self._identity is None:  # only if something else reaped our child
            raise ChildProcessError(f"process {self._proc.pid} was reaped behind our back")
        return self._identity

    def signal(self, sig: signal.Signals) -> bool:
        return signal_group(self.pgid, sig)

    def close(self) -> int:
        """Reap the (already exited) leader, release the pidfd and pipe; the ``Popen`` code.

        Reaped with ``wait4`` for its rusage: the CPU time tells a CPU-limit kill from a crash.
        """
        if self._proc.returncode is None:
            _, status, usage = os.wait4(self._proc.pid, 0)
            self._proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_ms = int((usage.ru_utime + usage.ru_stime) * 1000)
        returncode = self._proc.returncode
        if not self.exited.done():  # reaped without the reader having run yet
            self._loop.remove_reader(self._pidfd)
            self.exited.set_result(None)
        os.close(self._pidfd)
        if not self.eof.done():
            self._loop.remove_reader(self._out)
            self.eof.set_result(None)
        _stdout(self._proc).close()
        return returncode

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        self.exited.set_result(None)


async def wait_until(clock: Clock, deadline: int | None, *futures: asyncio.Future[None]) -> bool:
    """Wait until every future is done or ``deadline`` (monotonic ms; ``None``: no deadline).

    Returns whether all are done. ``asyncio.wait`` never cancels what it waits on, so the
    futures survive the caller's cancellation, which still needs them to reap the child.
    """
    pending = {f for f in futures if not f.done()}
    while pending:
        if deadline is None:
            await asyncio.wait(pending)
        elif clock.monotonic_ms() >= deadline:  # sleep_until may return early: re-check
            return False
        else:
            sleeper = asyncio.ensure_future(clock.sleep_until(deadline))
            try:
                await asyncio.wait({*pending, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
        pending = {f for f in pending if not f.done()}
    return True


async def wait_any(
    clock: Clock, deadline: int | None, *futures: asyncio.Future[None]
) -> asyncio.Future[None] | None:
    """Wait until any future is done (the first one found is returned) or ``deadline`` (None)."""
    while True:
        for f in futures:
            if f.done():
                return f
        if deadline is not None and clock.monotonic_ms() >= deadline:
            return None
        waiters: set[asyncio.Future[None]] = set(futures)
        sleeper = None if deadline is None else asyncio.ensure_future(clock.sleep_until(deadline))
        try:
            await asyncio.wait(
                waiters if sleeper is None else {*waiters, sleeper},
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if sleeper is not None:
                sleeper.cancel()


async def stop_group(child: Child, clock: Clock, grace_ms: int) -> None:
    """SIGTERM the group, give the leader ``grace_ms`` to exit (and the pipe to close), SIGKILL.

    The leader exiting first does not cut its children's grace short: the group gets the whole
    grace unless the pipe closed too (every member gone or detached from it).
    """
    child.signal(signal.SIGTERM)
    await wait_until(clock, clock.monotonic_ms() + grace_ms, child.exited, child.eof)
    child.signal(signal.SIGKILL)
    await wait_until(clock, None, child.exited)


async def kill_and_reap(child: Child) -> int:
    """SIGKILL the group and reap the leader, even if cancelled again meanwhile.

    SIGKILL makes the wait short, and leaving it would leak an unreaped child; a caller on its
    way out with an exception re-raises it afterwards.
    """
    child.signal(signal.SIGKILL)
    while not child.exited.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({child.exited})
    return child.close()


def _stdout(proc: subprocess.Popen[bytes]) -> IO[bytes]:
    assert proc.stdout is not None, "spawned with stdout=PIPE"
    return proc.stdout


def done_of(fut: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A ``Future[None]`` resolved when ``fut`` is, so it can be waited on with the others."""
    return _resolved_if(fut, lambda _: True)


def failure_of(fut: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A ``Future[None]`` resolved only if ``fut`` fails (raises or is cancelled): a run watches
    its start's row being stored this way, and goes on untouched when it is."""
    return _resolved_if(fut, lambda f: f.cancelled() or f.exception() is not None)


def _resolved_if(
    fut: asyncio.Future[Any], test: Callable[[asyncio.Future[Any]], bool]
) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def resolve(f: asyncio.Future[Any]) -> None:
        if not done.done() and test(f):
            done.set_result(None)

    fut.add_done_callback(resolve)
    return done
