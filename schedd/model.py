"""Schedules, firings, runs and their lifecycles, as plain data.

A *schedule* is a rule (trigger) plus a task and policies; a *firing* is one occurrence of it,
named by its idempotency key; a *run* is one attempt of a firing in a worker (DESIGN §1).

The firing lifecycle is a transition table, and the store refuses anything outside it
(``IllegalTransition``), so a bug elsewhere cannot, say, resurrect a succeeded firing::

    scheduled ─► committed ─► running ─► succeeded | dead | quarantined
        │            │           └─► failed (retry scheduled) ─► committed …
        └──► skipped / cancelled (from any non-final state)

``due`` from DESIGN §2 is not stored: a firing is "due" only in memory, between the wheel
popping its handle and the write-ahead commit.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from schedd.record import record


class FiringState(enum.StrEnum):
    SCHEDULED = "scheduled"
    COMMITTED = "committed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset(
    {
        FiringState.SUCCEEDED,
        FiringState.DEAD,
        FiringState.QUARANTINED,
        FiringState.SKIPPED,
        FiringState.CANCELLED,
    }
)

#: Committed or running firings are the "uncertain suffix" re-run after a crash.
UNFINISHED_STATES = frozenset({FiringState.COMMITTED, FiringState.RUNNING})

_S = FiringState
TRANSITIONS: Mapping[FiringState, frozenset[FiringState]] = {
    _S.SCHEDULED: frozenset({_S.COMMITTED, _S.SKIPPED, _S.CANCELLED}),
    # committed → committed is the crash-recovery re-queue (attempt + 1).
    # committed → dead: the firing cannot start at all (its payload is unreadable).
    _S.COMMITTED: frozenset({_S.COMMITTED, _S.RUNNING, _S.DEAD, _S.SKIPPED, _S.CANCELLED}),
    _S.RUNNING: frozenset(
        {_S.COMMITTED, _S.SUCCEEDED, _S.FAILED, _S.DEAD, _S.QUARANTINED, _S.CANCELLED}
    ),
    _S.FAILED: frozenset({_S.COMMITTED, _S.DEAD, _S.CANCELLED}),
    _S.DEAD: frozenset({_S.COMMITTED}),  # an operator's retry
    _S.QUARANTINED: frozenset({_S.COMMITTED}),  # an operator's retry
    _S.SUCCEEDED: frozenset(),
    _S.SKIPPED: frozenset(),
    _S.CANCELLED: frozenset(),
}


def can_transition(old: FiringState, new: FiringState) -> bool:
    return new in TRANSITIONS[old]


class RunOutcome(enum.StrEnum):
    """How one attempt ended. Only ``CRASH`` counts towards quarantine (DESIGN §5)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    RESOURCE_LIMIT = "resource_limit"
    CRASH = "crash"
    #: The daemon died while the run was in flight; its result is unknown.
    LOST = "lost"
    #: Stopped by schedd on purpose: overlap ``replace`` preempted it for a newer occurrence.
    CANCELLED = "cancelled"


class Misfire(enum.StrEnum):
    FIRE_ONCE = "fire_once"
    FIRE_ALL = "fire_all"
    SKIP = "skip"


class Overlap(enum.StrEnum):
    SKIP = "skip"
    QUEUE_ONE = "queue_one"
    ALLOW = "allow"
    REPLACE = "replace"


class Source(enum.StrEnum):
    CONFIG = "config"
    API = "api"


# --- triggers ---------------------------------------------------------------------------------


@record
class CronSpec:
    """A 5- or 6-field cron expression (6th field = seconds, croniter's convention)."""

    expr: str
    timezone: str = "UTC"


@record
class IntervalSpec:
    """Every ``every_ms``, at ``anchor_ms + k * every_ms`` (default anchor: the Unix epoch).

    A fixed anchor makes occurrences independent of when the daemon started, so a restart or a
    reload never shifts the series and the high-water mark stays meaningful.
    """

    every_ms: int
    anchor_ms: int = 0


@record
class OnceSpec:
    at_ms: int


TriggerSpec = CronSpec | IntervalSpec | OnceSpec


# --- tasks ------------------------------------------------------------------------------------


@record
class CommandTask:
    """An argv run without a shell unless ``shell`` is set explicitly."""

    argv: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    shell: bool = False


@record
class PythonTask:
    """``"package.module:function"`` called in a pool worker with JSON ``args``/``kwargs``.

    The function may be sync or async; if it declares a parameter named ``context`` it receives
    the firing's context (idempotency key, scheduled time, attempt, schedule) there.
    """

    target: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


TaskSpec = CommandTask | PythonTask


# --- policies and schedules -------------------------------------------------------------------


@record
class Retry:
    """Exponential backoff with full jitter: attempt n waits ``uniform(0, min(max, base·2^(n-1)))``.

    ``max_attempts`` counts every run of a firing, the first included (1 disables retries).
    """

    max_attempts: int = 5
    base_ms: int = 1_000
    max_ms: int = 300_000


@record
class Limits:
    """Per-task rlimits (``None``: inherit). ``core_bytes`` is 0 so a crash cannot fill the disk."""

    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = None
    core_bytes: int = 0


DEFAULT_RETRY = Retry()
NO_LIMITS = Limits()


@record
class Policies:
    misfire: Misfire = Misfire.FIRE_ONCE
    misfire_grace_ms: int = 60_000
    max_catchup: int = 100
    overlap: Overlap = Overlap.SKIP
    timeout_ms: int | None = None
    #: Between SIGTERM and SIGKILL when a run times out or the daemon stops.
    kill_grace_ms: int = 10_000
    retry: Retry = DEFAULT_RETRY
    limits: Limits = NO_LIMITS
    #: An argv run (with the firing's details in its environment) when a firing is quarantined.
    on_quarantine: tuple[str, ...] | None = None
    #: Alarm when no run of the schedule succeeded for this long (a schedule that silently stops
    #: succeeding is the failure cron never reports); None: no expectation.
    expect_success_within_ms: int | None = None
    #: An argv run when that window passes without a success.
    on_overdue: tuple[str, ...] | None = None


@record
class ScheduleSpec:
    """Everything that defines a schedule; its runtime state (high-water, paused) lives apart."""

    name: str
    trigger: TriggerSpec
    task: TaskSpec
    policies: Policies = Policies()
    #: ``None``: the default stable jitter; ``0``: off; otherwise the bound in ms.
    jitter_ms: int | None = None
    lane: str = "default"
    tenant: str | None = None
    source: Source = Source.CONFIG


# --- JSON forms (the store and the admin protocol share them) ----------------------------------


def trigger_to_json(t: TriggerSpec) -> dict[str, Any]:
    match t:
        case CronSpec(expr, tz):
            return {"cron": expr, "timezone": tz}
        case IntervalSpec(every_ms, anchor_ms):
            return {"every_ms": every_ms, "anchor_ms": anchor_ms}
        case OnceSpec(at_ms):
            return {"at_ms": at_ms}


def trigger_from_json(d: Mapping[str, Any]) -> TriggerSpec:
    if "cron" in d:
        return CronSpec(str(d["cron"]), str(d.get("timezone", "UTC")))
    if "every_ms" in d:
        return IntervalSpec(int(d["every_ms"]), int(d.get("anchor_ms", 0)))
    return OnceSpec(int(d["at_ms"]))


def task_to_json(t: TaskSpec) -> dict[str, Any]:
    match t:
        case CommandTask(argv, cwd, env, shell):
            return {"command": list(argv), "cwd": cwd, "env": dict(env), "shell": shell}
        case PythonTask(target, args, kwargs):
            return {"python": target, "args": list(args), "kwargs": dict(kwargs)}


def task_from_json(d: Mapping[str, Any]) -> TaskSpec:
    if "python" in d:
        return PythonTask(
            target=str(d["python"]),
            args=tuple(d.get("args") or ()),
            kwargs=dict(d.get("kwargs") or {}),
        )
    return CommandTask(
        argv=tuple(d["command"]),
        cwd=d.get("cwd"),
        env=dict(d.get("env") or {}),
        shell=bool(d.get("shell", False)),
    )


def policies_to_json(p: Policies) -> dict[str, Any]:
    return {
        "misfire": p.misfire.value,
        "misfire_grace_ms": p.misfire_grace_ms,
        "max_catchup": p.max_catchup,
        "overlap": p.overlap.value,
        "timeout_ms": p.timeout_ms,
        "kill_grace_ms": p.kill_grace_ms,
        "retry": {
            "max_attempts": p.retry.max_attempts,
            "base_ms": p.retry.base_ms,
            "max_ms": p.retry.max_ms,
        },
        "limits": {
            "memory_bytes": p.limits.memory_bytes,
            "cpu_seconds": p.limits.cpu_seconds,
            "open_files": p.limits.open_files,
            "core_bytes": p.limits.core_bytes,
        },
        "on_quarantine": None if p.on_quarantine is None else list(p.on_quarantine),
        # Written only when set, so schedules without them keep the digest they had before the
        # keys existed (an upgrade must not report every schedule "changed").
        **(
            {}
            if p.expect_success_within_ms is None
            else {"expect_success_within_ms": p.expect_success_within_ms}
        ),
        **({} if p.on_overdue is None else {"on_overdue": list(p.on_overdue)}),
    }


def policies_from_json(d: Mapping[str, Any]) -> Policies:
    retry, limits, hook = d.get("retry"), d.get("limits"), d.get("on_quarantine")
    return Policies(
        retry=Retry(**retry) if retry else Retry(),
        limits=Limits(**limits) if limits else Limits(),
        on_quarantine=None if hook is None else tuple(hook),
        misfire=Misfire(d["misfire"]),
        misfire_grace_ms=int(d["misfire_grace_ms"]),
        max_catchup=int(d["max_catchup"]),
        overlap=Overlap(d["overlap"]),
        timeout_ms=None if d.get("timeout_ms") is None else int(d["timeout_ms"]),
        kill_grace_ms=int(d["kill_grace_ms"]),
        expect_success_within_ms=None
        if d.get("expect_success_within_ms") is None
        else int(d["expect_success_within_ms"]),
        on_overdue=None if d.get("on_overdue") is None else tuple(d["on_overdue"]),
    )


def schedule_rule_to_json(s: ScheduleSpec) -> dict[str, Any]:
    """The small part the dispatcher reads: trigger and policies, never the task payload."""
    return {
        "trigger": trigger_to_json(s.trigger),
        "policies": policies_to_json(s.policies),
        "jitter_ms": s.jitter_ms,
        "lane": s.lane,
        "tenant": s.tenant,
    }
