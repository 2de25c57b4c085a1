"""How a run ended, in one vocabulary for command tasks and Python tasks alike.

:func:`classify` is the single rule (DESIGN §5) that turns a process's end into a
:class:`~schedd.model.RunOutcome`. Only ``CRASH`` counts towards quarantine, so every death
that schedd caused or a limit explains is taken out first:

* schedd stopped it at its timeout → ``TIMEOUT``, whatever the exit (a task that trapped
  SIGTERM and exited 0 still did not finish in time);
* schedd stopped it on purpose (overlap ``replace``) → ``CANCELLED``;
* killed by ``SIGXCPU`` under a CPU limit (the kernel's signal at the soft ``RLIMIT_CPU``), or by
  ``SIGKILL`` under a CPU limit once its CPU time reached it (the hard limit) →
  ``RESOURCE_LIMIT``;
* any other death by signal → ``CRASH``; exit 0 → ``SUCCEEDED``; any other exit → ``FAILED``.

A memory limit (``RLIMIT_AS``) makes allocation fail rather than kill: a Python task gets
``MemoryError`` (the worker reports ``RESOURCE_LIMIT``), a command usually exits non-zero with
ENOMEM (``FAILED``). A command that segfaults because it ignored a failed ``malloc`` cannot be
told apart from any other segfault, and counts as a crash.

A shell reports its child's death as exit 128+n, so with ``shell = true`` only the shell's own
death is seen as a crash.
"""

from __future__ import annotations

import enum
import signal

from schedd.model import NO_LIMITS, Limits, RunOutcome
from schedd.record import record


class Ending(enum.Enum):
    """Why supervision stopped waiting for a run."""

    EXITED = "exited"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"


@record
class RunResult:
    outcome: RunOutcome
    exit_code: int | None
    signal: int | None
    reason: str | None
    output: bytes = b""
    output_truncated: bool = False


def classify(
    returncode: int,
    *,
    ending: Ending = Ending.EXITED,
    timeout_ms: int | None = None,
    limits: Limits = NO_LIMITS,
    cpu_ms: int | None = None,
    stop_reason: str | None = None,
) -> RunResult:
    """A run's result from its ``Popen`` return code (negative: killed by that signal).

    ``cpu_ms`` is the CPU time the process used (from its rusage), when known.
    """
    exit_code = returncode if returncode >= 0 else None
    sig = -returncode if returncode < 0 else None
    if ending is Ending.TIMED_OUT:
        return RunResult(
            RunOutcome.TIMEOUT, exit_code, sig, f"timeout after {duration(timeout_ms or 0)}"
        )
    if ending is Ending.STOPPED:
        return RunResult(RunOutcome.CANCELLED, exit_code, sig, stop_reason or "stopped by schedd")
    if sig is not None:
        if cpu_limit_explains(sig, limits, cpu_ms):
            return RunResult(
                RunOutcome.RESOURCE_LIMIT,
                None,
                sig,
                f"CPU limit of {limits.cpu_seconds}s reached ({signal_name(sig)})",
            )
        return RunResult(RunOutcome.CRASH, None, sig, f"killed by {signal_name(sig)}")
    if returncode == 0:
        return RunResult(RunOutcome.SUCCEEDED, 0, None, None)
    return RunResult(RunOutcome.FAILED, returncode, None, f"exit status {returncode}")


def cpu_limit_explains(sig: int, limits: Limits, cpu_ms: int | None) -> bool:
    if limits.cpu_seconds is None:
        return False
    if sig == signal.SIGXCPU:
        return True
    return sig == signal.SIGKILL and cpu_ms is not None and cpu_ms >= limits.cpu_seconds * 1000


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def duration(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
