"""The pool's side of its conversation with a worker: the call it sends, the answers it takes.

A worker is distrusted (STYLE): every answer is checked field by field before it means anything,
and a bad one is a :class:`~schedd.workers.pyworker.ProtocolError` the pool treats as a broken
worker. The worker's side is :mod:`schedd.workers.pyworker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schedd.errors import InvalidArgument
from schedd.model import NO_LIMITS, Limits, RunOutcome
from schedd.record import record
from schedd.workers import pyworker
from schedd.workers.outcome import RunResult, signal_name
from schedd.workers.pyworker import ProtocolError, get_field, get_int


@record
class PythonCall:
    """One run of a Python task: what to call, with which firing, under which limits."""

    target: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    #: ``idempotency_key``, ``scheduled_for`` (RFC 3339), ``attempt``, ``schedule`` (or None).
    context: Mapping[str, Any]
    #: The firing's ``SCHEDD_*`` variables, set in the worker's ``os.environ`` for the call.
    env: Mapping[str, str]
    timeout_ms: int | None
    kill_grace_ms: int
    limits: Limits = NO_LIMITS

    def __post_init__(self) -> None:
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise InvalidArgument(f"timeout_ms must be positive, got {self.timeout_ms}")
        if self.kill_grace_ms < 0:
            raise InvalidArgument(f"kill_grace_ms must be >= 0, got {self.kill_grace_ms}")


@record
class Done:
    """A worker's answer to a run, checked."""

    ok: bool
    error: str
    kind: str
    retire: bool


def run_message(run_id: int, call: PythonCall) -> dict[str, Any]:
    limits = call.limits
    return {
        "type": "run",
        "id": run_id,
        "target": call.target,
        "args": list(call.args),
        "kwargs": dict(call.kwargs),
        "context": dict(call.context),
        "env": dict(call.env),
        "limits": {
            "memory_bytes": limits.memory_bytes,
            "cpu_seconds": limits.cpu_seconds,
            "open_files": limits.open_files,
            "core_bytes": limits.core_bytes,
        },
    }


def parse_ready(message: Mapping[str, Any]) -> None:
    if message["type"] != "ready":
        raise ProtocolError(f"expected ready, got {message['type']!r:.40}")
    get_int(message, "pid")
    get_field(message, "python", str)


def parse_done(message: Mapping[str, Any], run_id: int) -> Done:
    if message["type"] != "done":
        raise ProtocolError(f"expected done, got {message['type']!r:.40}")
    if get_int(message, "id") != run_id:
        raise ProtocolError(f"done for run {message['id']}, expected {run_id}")
    ok = get_field(message, "ok", bool)
    retire = message.get("retire", False)
    if not isinstance(retire, bool):
        raise ProtocolError("field 'retire' must be a bool")
    if ok:
        return Done(True, "", "", retire)
    kind = get_field(message, "kind", str)
    if kind not in pyworker.KINDS:
        raise ProtocolError(f"unknown failure kind {kind!r:.40}")
    error = get_field(message, "error", str)[: pyworker.ERROR_MAX]
    return Done(False, error, kind, retire)


def result_of(done: Done, limits: Limits) -> RunResult:
    if done.ok:
        return RunResult(RunOutcome.SUCCEEDED, None, None, None)
    if done.kind == "resource_limit":
        reason = f"memory limit of {limits.memory_bytes} bytes reached: {done.error}"
        return RunResult(RunOutcome.RESOURCE_LIMIT, None, None, reason)
    return RunResult(RunOutcome.FAILED, None, None, f"{done.kind}: {done.error}")


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return f"exit status {returncode}"
