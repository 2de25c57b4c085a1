"""Run one command task, and leave nothing of it behind.

A task is a process *group*: the command is started as the leader of a new session and process
group (``start_new_session``; pgid == pid), so a signal to the group reaches the shell, its
pipelines and its background jobs alike. ``preexec_fn`` is never used: the daemon has threads
(one per aiosqlite connection) and a fork with threads may deadlock before exec.

The life of a run::

    spawn ─► on_spawn(identity) ─► wait for the leader ─────────────────────────┐
                                       │ timeout                                 │ leader exited
                                       ▼                                         ▼
                       SIGTERM group ─► wait ≤ grace for leader exit + EOF ─► SIGKILL group
                                                                                 │
                             wait for the leader ─► drain the pipe ≤ 1 s ─► reap ─► classify

* **Leftovers are killed.** When the leader exits, whatever it left running in its group is
  SIGKILLed: a run is over when its leader is, and a background job still running would
  overlap the next run of the same key (DESIGN §2). On a timeout the whole group gets its full
  grace after SIGTERM (the leader exiting first does not cut its children's grace short).
* **Exit is watched with a pidfd; the leader is reaped last.** asyncio's subprocess support
  reaps a child the moment it exits, on the child watcher's thread. That loses twice: a fast
  task's ``/proc`` entry may be gone before ``on_spawn`` reads its start time (measured here: 8
  of 200 runs of ``true``), and once the leader is reaped its pid, the group's id, can be
  recycled while we still mean to signal leftovers. So the task is started with
  ``subprocess.Popen`` (the same call asyncio makes from the loop thread), a pidfd reports the
  exit, and the zombie leader pins the group id until the last signal has been sent.
* **Output** goes to one pipe (stderr into stdout, so the tail interleaves them as a terminal
  would), read as it arrives into an :class:`OutputTail`: O(tail) memory for any amount, and a
  silent task just leaves a reader idle on the event loop. After the leader exits the pipe is
  drained until EOF, but a process that escaped the group (``setsid``) can hold the pipe open
  forever, so the drain gives up after ``DRAIN_MS``. Such an escapee also survives the
  SIGKILL: it is a documented limit (reliability plan §2.3, T11); the unit's cgroup
  (``KillMode=``) gets it at stop.
* **Cancellation** (the daemon stopping after its grace) and a failing ``on_spawn`` SIGKILL the
  group and reap it before the exception propagates: no run outlives the coroutine that owns it.
* **Spawn failures** (no such file, not executable, bad ``cwd``, an env value with a NUL) are a
  ``FAILED`` result, not an exception: to the firing they are a failed attempt like any other.

Waiting uses the injected :class:`~schedd.clock.Clock`, so timeouts are testable with a fake
clock, and the deadline is taken at spawn, so a slow ``on_spawn`` store write does not extend
the run's time.

**Classification** is :func:`classify`, a pure function so that resource limits can join it:
exit 0 succeeds, any other exit fails, a run schedd timed out is ``TIMEOUT`` however it ended,
and any other death by signal is a ``CRASH``, the only outcome that counts towards quarantine
(DESIGN §5). A shell reports its child's death as exit 128+n, so with ``shell = true`` only the
shell's own death is seen as a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import IO, NamedTuple

from schedd.clock import Clock
from schedd.errors import InvalidArgument
from schedd.model import RunOutcome
from schedd.workers.output import OutputTail
from schedd.workers.procs import ProcessIdentity, process_identity, signal_group

#: How long to keep reading output after the group was killed; only a process that escaped the
#: group can hold the pipe open that long.
DRAIN_MS = 1_000


@dataclass(frozen=True, slots=True)
class CommandRequest:
    #: With ``shell``, exactly one string: the script handed to ``/bin/sh -c``.
    argv: tuple[str, ...]
    cwd: str | None
    #: The complete environment (see :func:`schedd.workers.environment.build_env`).
    env: Mapping[str, str]
    shell: bool
    timeout_ms: int | None
    kill_grace_ms: int
    output_tail_bytes: int

    def __post_init__(self) -> None:
        if not self.argv:
            raise InvalidArgument("command argv must not be empty")
        if self.shell and len(self.argv) != 1:
            raise InvalidArgument(
                f"a shell command takes exactly one string, got argv of {len(self.argv)}"
            )
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise InvalidArgument(f"timeout_ms must be positive, got {self.timeout_ms}")
        if self.kill_grace_ms < 0:
            raise InvalidArgument(f"kill_grace_ms must be >= 0, got {self.kill_grace_ms}")
        if self.output_tail_bytes < 0:
            raise InvalidArgument(f"output_tail_bytes must be >= 0, got {self.output_tail_bytes}")


class Classification(NamedTuple):
    outcome: RunOutcome
    exit_code: int | None
    signal: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class CommandResult:
    outcome: RunOutcome
    exit_code: int | None
    signal: int | None
    reason: str | None
    output: bytes
    output_truncated: bool


def classify(returncode: int, killed_for_timeout_ms: int | None) -> Classification:
    """How a run ended, from its ``Popen`` return code (negative: killed by that signal).

    ``killed_for_timeout_ms`` is the timeout schedd enforced on this run, or ``None`` if it did
    not: a run stopped at its timeout is ``TIMEOUT`` even if it trapped SIGTERM and exited 0,
    because it did not finish its work in time.
    """
    exit_code = returncode if returncode >= 0 else None
    sig = -returncode if returncode < 0 else None
    if killed_for_timeout_ms is not None:
        return Classification(
            RunOutcome.TIMEOUT, exit_code, sig, f"timeout after {_duration(killed_for_timeout_ms)}"
        )
    if sig is not None:
        return Classification(RunOutcome.CRASH, None, sig, f"killed by {_signal_name(sig)}")
    if returncode == 0:
        return Classification(RunOutcome.SUCCEEDED, 0, None, None)
    return Classification(RunOutcome.FAILED, returncode, None, f"exit status {returncode}")


async def run_command(
    req: CommandRequest,
    clock: Clock,
    *,
    on_spawn: Callable[[ProcessIdentity], Awaitable[None]],
) -> CommandResult:
    """Run ``req`` to the end (see the module docstring); only cancellation or ``on_spawn`` raise.

    ``on_spawn`` is awaited once the process exists and its output is being read, before the
    run is waited for: the caller records the identity for crash recovery there.
    """
    try:
        child = _Child.spawn(req)
    except (OSError, ValueError) as exc:
        return CommandResult(
            outcome=RunOutcome.FAILED,
            exit_code=None,
            signal=None,
            reason=f"spawn failed: {exc}",
            output=b"",
            output_truncated=False,
        )
    deadline = None if req.timeout_ms is None else clock.monotonic_ms() + req.timeout_ms
    tail = OutputTail(req.output_tail_bytes)
    try:
        await child.read_into(tail)
        await on_spawn(child.identity())
        timed_out = await _supervise(child, clock, deadline, req.kill_grace_ms)
    except BaseException:
        signal_group(child.pgid, signal.SIGKILL)
        await _wait_ignoring_cancellation(child.exited)
        child.close()
        raise
    returncode = child.close()
    verdict = classify(returncode, req.timeout_ms if timed_out else None)
    return CommandResult(
        outcome=verdict.outcome,
        exit_code=verdict.exit_code,
        signal=verdict.signal,
        reason=verdict.reason,
        output=tail.getvalue(),
        output_truncated=tail.truncated,
    )


async def _supervise(child: _Child, clock: Clock, deadline: int | None, grace_ms: int) -> bool:
    """Take the run from spawned to drained; whether schedd had to stop it for its timeout."""
    timed_out = not await _wait_until(clock, deadline, child.exited)
    if timed_out:
        signal_group(child.pgid, signal.SIGTERM)
        await _wait_until(clock, clock.monotonic_ms() + grace_ms, child.exited, child.eof)
    # The leader is gone or its grace is over: whatever is left of the group is a leftover.
    signal_group(child.pgid, signal.SIGKILL)
    await _wait_until(clock, None, child.exited)
    await _wait_until(clock, clock.monotonic_ms() + DRAIN_MS, child.eof)
    return timed_out


async def _wait_until(clock: Clock, deadline: int | None, *futures: asyncio.Future[None]) -> bool:
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


async def _wait_ignoring_cancellation(fut: asyncio.Future[None]) -> None:
    """Wait for a SIGKILLed child to exit even if cancelled again meanwhile.

    SIGKILL makes the wait short, and leaving it would leak an unreaped child; the caller
    re-raises the exception that brought it here.
    """
    while not fut.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({fut})


class _Child:
    """A spawned task: its ``Popen``, a pidfd reporting its exit, and its output pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], pidfd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._proc = proc
        self._pidfd = pidfd
        self._transport: asyncio.ReadTransport | None = None
        self.pgid = proc.pid
        self.exited: asyncio.Future[None] = self._loop.create_future()
        self.eof: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(pidfd, self._on_exit)

    @classmethod
    def spawn(cls, req: CommandRequest) -> _Child:
        """Fork and exec the task (synchronously, as asyncio itself does) and open its pidfd."""
        argv = ("/bin/sh", "-c", req.argv[0]) if req.shell else req.argv
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=req.cwd,
            env=dict(req.env),
            close_fds=True,
            start_new_session=True,
        )
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:  # EMFILE: the task must not run unsupervised
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            _stdout(proc).close()
            raise
        return cls(proc, pidfd)

    async def read_into(self, tail: OutputTail) -> None:
        self._transport, _ = await self._loop.connect_read_pipe(
            lambda: _TailProtocol(tail, self.eof), _stdout(self._proc)
        )

    def identity(self) -> ProcessIdentity:
        ident = process_identity(self._proc.pid)
        if ident is None:  # only if something else reaped our child
            raise ChildProcessError(f"task process {self._proc.pid} was reaped behind our back")
        return ident

    def close(self) -> int:
        """Reap the (already exited) leader and release the pidfd and pipe; the return code."""
        returncode = self._proc.wait()
        os.close(self._pidfd)
        if self._transport is not None:
            self._transport.close()
        else:
            _stdout(self._proc).close()
        return returncode

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        self.exited.set_result(None)


class _TailProtocol(asyncio.Protocol):
    def __init__(self, tail: OutputTail, eof: asyncio.Future[None]) -> None:
        self._tail = tail
        self._eof = eof

    def data_received(self, data: bytes) -> None:
        self._tail.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._eof.done():
            self._eof.set_result(None)


def _stdout(proc: subprocess.Popen[bytes]) -> IO[bytes]:
    assert proc.stdout is not None, "spawned with stdout=PIPE"
    return proc.stdout


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _duration(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
