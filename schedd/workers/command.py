"""Run one command task, and leave nothing of it behind.

The process handling (own session and group, pidfd, output pipe, rlimits without
``preexec_fn``) is :mod:`schedd.workers.spawn`'s, shared with the Python worker pool; this
module is the life of one command run::

    spawn ─► on_spawn(identity) ─► wait for the leader ──────────────────────────┐
                                 │ timeout, or stop requested               │ leader exited
                                 ▼                                          ▼
                 SIGTERM group ─► wait ≤ grace for leader exit + EOF ─► SIGKILL group
                                                                            │
                        wait for the leader ─► drain the pipe ≤ 1 s ─► reap ─► classify

* **Leftovers are killed.** When the leader exits, whatever it left running in its group is
  SIGKILLed: a run is over when its leader is, and a background job still running would
  overlap the next run of the same key (DESIGN §2). On a timeout the whole group gets its full
  grace after SIGTERM (the leader exiting first does not cut its children's grace short).
* **The pipe drain is bounded.** A process that escaped the group (``setsid``) can hold the
  pipe open forever, so after the leader exits the drain gives up after ``DRAIN_MS``. Such an
  escapee also survives the SIGKILL: a documented limit (reliability plan §2.3, T11); the
  unit's cgroup (``KillMode=``) gets it at stop.
* **Cancellation** (the daemon stopping after its grace) and a failing ``on_spawn`` SIGKILL the
  group and reap it before the exception propagates: no run outlives the coroutine that owns it.
  ``on_spawn`` is not waited for: what it returns (the caller storing the run's start) is
  watched beside the leader, and only its *failure* ends the run, while the group still runs.
* **Spawn failures** (no such file, not executable, bad ``cwd``, an env value with a NUL) are a
  ``FAILED`` result, not an exception: to the firing they are a failed attempt like any other.
* **Stop** (overlap ``replace``): resolving the ``stop`` future with a reason takes the group
  down like a timeout and the run ends ``CANCELLED`` with that reason.

Waiting uses the injected :class:`~schedd.clock.Clock`, so timeouts are testable with a fake
clock, and the deadline is taken at spawn, so a slow ``on_spawn`` store write does not extend
the run's time. Classification is :func:`schedd.workers.outcome.classify`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping

from schedd.clock import Clock
from schedd.errors import InvalidArgument
from schedd.model import NO_LIMITS, Limits, RunOutcome
from schedd.record import record
from schedd.workers.limits import LimitedLauncher, resolve_program
from schedd.workers.outcome import Ending, RunResult, classify
from schedd.workers.output import OutputTail
from schedd.workers.procs import ProcessIdentity
from schedd.workers.spawn import (
    DRAIN_MS,
    Child,
    done_of,
    failure_of,
    kill_and_reap,
    stop_group,
    wait_any,
    wait_until,
)


@record
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
    limits: Limits = NO_LIMITS

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


async def run_command(
    req: CommandRequest,
    clock: Clock,
    *,
    on_spawn: Callable[[ProcessIdentity], Awaitable[object]],
    launcher: LimitedLauncher | None = None,
    stop: asyncio.Future[str] | None = None,
) -> RunResult:
    """Run ``req`` to the end (see the module docstring); only cancellation or ``on_spawn`` raise.

    ``on_spawn`` is called once the process exists and its output is being read: the caller
    records the identity for crash recovery there. What it returns is watched, not waited for.
    """
    launcher = launcher or LimitedLauncher()
    argv = ("/bin/sh", "-c", req.argv[0]) if req.shell else req.argv
    try:
        argv = (resolve_program(argv[0], req.env, req.cwd), *argv[1:])
        child = Child.spawn(launcher.argv(argv, req.limits), cwd=req.cwd, env=req.env)
    except (OSError, ValueError) as exc:
        return RunResult(RunOutcome.FAILED, None, None, f"spawn failed: {exc}")
    deadline = None if req.timeout_ms is None else clock.monotonic_ms() + req.timeout_ms
    tail = OutputTail(req.output_tail_bytes)
    child.sink = tail
    try:
        launcher.after_spawn(child.pid, req.limits)
        started = asyncio.ensure_future(on_spawn(child.identity()))
        ending = await _supervise(child, clock, deadline, req.kill_grace_ms, stop, started)
    except BaseException:
        await kill_and_reap(child)
        raise
    returncode = child.close()
    verdict = classify(
        returncode,
        ending=ending,
        timeout_ms=req.timeout_ms,
        limits=req.limits,
        cpu_ms=child.cpu_ms,
        stop_reason=stop.result() if stop is not None and stop.done() else None,
    )
    return RunResult(
        verdict.outcome,
        verdict.exit_code,
        verdict.signal,
        verdict.reason,
        tail.getvalue(),
        tail.truncated,
    )


async def _supervise(
    child: Child,
    clock: Clock,
    deadline: int | None,
    grace_ms: int,
    stop: asyncio.Future[str] | None,
    started: asyncio.Future[object],
) -> Ending:
    """Take the run from spawned to drained; why it ended. Raises what ``started`` raises if
    it fails while the leader runs."""
    stops = () if stop is None else (done_of(stop),)
    failed = failure_of(started)
    first = await wait_any(clock, deadline, child.exited, failed, *stops)
    if first is failed:
        started.result()  # raises its exception; the caller kills the group
    ending = Ending.EXITED
    if first is not child.exited:
        ending = Ending.TIMED_OUT if first is None else Ending.STOPPED
        await stop_group(child, clock, grace_ms)
    # The leader is gone or its grace is over: whatever is left of the group is a leftover.
    child.signal(signal.SIGKILL)
    await wait_until(clock, None, child.exited)
    await wait_until(clock, clock.monotonic_ms() + DRAIN_MS, child.eof)
    child.drain()
    return ending
