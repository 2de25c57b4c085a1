"""Schedules and ad-hoc tasks sent through the admin API, read by the config file's own rules.

``schedules.add`` takes a ``spec`` object with exactly the keys of a ``[schedules.NAME]`` table,
and ``submit`` a ``task`` object with its task and policy keys, so an operator who knows the
file knows the API, and the two can never disagree about what is valid: both go through
:func:`~schedd.config.schedules.build_schedule` (or its task and policy halves) with the
daemon's ``[defaults]`` and tenants. Problems come back as one :class:`ConfigError` naming
``spec.<key>`` or ``task.<key>``, every problem at once, as ``check-config`` does for a file.
"""

from __future__ import annotations

from collections.abc import Mapping

from schedd import model
from schedd.config.policies import merge_policies
from schedd.config.schedules import build_schedule, unknown_name
from schedd.config.schema import SCHEDULE, TRIGGER_KEYS
from schedd.config.sections import Config
from schedd.config.tasks import build_task
from schedd.config.walk import At, Ctx, read
from schedd.errors import ConfigError, InvalidArgument
from schedd.keys import validate_name
from schedd.lanes import DEFAULT_LANE

#: Keys of a schedule table that make no sense for a task that runs once, now or ``at``.
_TIMING_KEYS = (*TRIGGER_KEYS, "timezone", "jitter", "misfire", "misfire_grace", "max_catchup")
#: Keys of a schedule table a submitted task may not carry, and why.
_NOT_IN_A_TASK = {
    **dict.fromkeys(
        _TIMING_KEYS, "not allowed in a submitted task: it runs once (pass `at` to run it later)"
    ),
    "lane": "not allowed in a submitted task: pass `lane` to submit itself, next to `task`",
}
_TASK_SCHEMA = {k: v for k, v in SCHEDULE.items() if k not in _NOT_IN_A_TASK}


def api_schedule(name: str, spec: object, config: Config) -> model.ScheduleSpec:
    """The schedule ``schedules.add`` asked for, marked ``api``; ConfigError naming ``spec.*``."""
    validate_name(name)
    table = _table(spec, "spec")
    at = _root("spec", config)
    built = build_schedule(
        name,
        table,
        config.defaults,
        config.tenants.keys(),
        config.lanes.keys(),
        at,
        model.Source.API,
    )
    if at.ctx.problems or built is None:
        raise ConfigError(at.ctx.problems or [("spec", "is not a valid schedule")])
    return built


def api_task(task: object, config: Config) -> tuple[model.TaskSpec, model.Policies, str | None]:
    """The task, policies and tenant ``submit`` asked for; ConfigError naming ``task.*``."""
    table = _table(task, "task")
    at = _root("task", config)
    for key, why in _NOT_IN_A_TASK.items():
        if key in table:
            (at / key).problem(why)
    values = read({k: v for k, v in table.items() if k not in _NOT_IN_A_TASK}, _TASK_SCHEMA, at)
    policies = merge_policies(config.defaults.policies, values, at, "defaults.retry")
    built = build_task(values, table, config.defaults.max_payload_bytes, at)
    tenant: str | None = values.get("tenant")
    if tenant is not None and tenant not in config.tenants:
        (at / "tenant").problem(f"unknown tenant {tenant!r}: there is no [tenants.{tenant}] table")
    if at.ctx.problems or built is None:
        raise ConfigError(at.ctx.problems or [("task", "is not a valid task")])
    return built, policies, tenant


def api_lane(lane: str | None, config: Config) -> str:
    """The lane ``submit`` asked for (``default`` if none); InvalidArgument naming ``lane``."""
    if lane is None:
        return DEFAULT_LANE
    if lane not in config.lanes:
        raise InvalidArgument("lane: " + unknown_name("lane", lane, config.lanes.keys()))
    return lane


def _table(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _root(key: str, config: Config) -> At:
    """Relative paths (``cwd``) resolve as they would in the config file."""
    base = config.path.parent if config.path is not None else config.daemon.state_dir
    return At(key, Ctx(base))
