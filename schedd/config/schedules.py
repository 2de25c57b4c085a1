"""One ``[schedules.NAME]`` table → a :class:`model.ScheduleSpec`, with ``[defaults]`` filled in.

A schedule goes through the same rules as one added through the admin API (names by
:func:`schedd.keys.validate_name`, triggers by :func:`schedd.triggers.make_trigger`, instants by
:func:`schedd.keys.parse_instant`), so the config and the API accept the same schedules and
refuse the others with the same message, here under a config key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from schedd import model
from schedd.config.convert import report_bad_name
from schedd.config.policies import merge_policies
from schedd.config.schema import SCHEDULE, TRIGGER_KEYS
from schedd.config.sections import Defaults
from schedd.config.tasks import build_task
from schedd.config.walk import At, did_you_mean, read, show
from schedd.errors import InvalidArgument
from schedd.keys import parse_instant
from schedd.lanes import DEFAULT_LANE
from schedd.triggers import Trigger, make_trigger
from schedd.units import format_duration


def build_schedule(
    name: str,
    table: Mapping[str, object],
    defaults: Defaults,
    tenants: Collection[str],
    lanes: Collection[str],
    at: At,
    source: model.Source,
) -> model.ScheduleSpec | None:
    """The schedule at ``at``, marked ``source``; None if it has any problem (all reported).

    ``tenants`` and ``lanes`` are the names of the ``[tenants.NAME]`` and ``[lanes.NAME]``
    tables (``default`` among the lanes), valid or not: a tenant with a bad ``retry_budget`` is
    reported there, not again at every schedule naming it.
    """
    before = at.problem_count()
    report_bad_name(name, "schedule name", at)
    values = read(table, SCHEDULE, at)
    policies = merge_policies(defaults.policies, values, at, "defaults.retry")
    timezone_ok = "timezone" in values or "timezone" not in table
    timezone: str = values.get("timezone", defaults.timezone)
    trigger = _trigger(values, table, timezone, at) if timezone_ok else None
    task = build_task(values, table, defaults.max_payload_bytes, at)
    jitter_ms: int | None = values.get("jitter_ms", defaults.jitter_ms)
    if trigger is not None and jitter_ms:
        _check_jitter(jitter_ms, trigger, table, at)
    tenant: str | None = values.get("tenant")
    if tenant is not None and tenant not in tenants:
        (at / "tenant").problem(unknown_name("tenant", tenant, tenants))
    lane: str = values.get("lane", DEFAULT_LANE)
    if lane not in lanes:
        (at / "lane").problem(unknown_name("lane", lane, lanes))
    if trigger is None or task is None or at.problem_count() > before:
        return None
    return model.ScheduleSpec(
        name=name,
        trigger=trigger[0],
        task=task,
        policies=policies,
        jitter_ms=jitter_ms,
        lane=lane,
        tenant=tenant,
        source=source,
    )


def unknown_name(kind: str, name: str, known: Collection[str]) -> str:
    """Why a schedule's ``tenant`` or ``lane`` is refused, with the closest known name."""
    message = f"unknown {kind} {show(name)}: there is no [{kind}s.{name}] table"
    return message + did_you_mean(name, known) if known else message


def _trigger(
    values: Mapping[str, Any], table: Mapping[str, object], timezone: str, at: At
) -> tuple[model.TriggerSpec, Trigger] | None:
    present = [k for k in TRIGGER_KEYS if k in table]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        at.problem(f"set exactly one of cron, every, at (found {found})")
        return None
    kind = present[0]
    if SCHEDULE[kind].attr not in values:
        return None  # its value was refused and reported
    spec: model.TriggerSpec
    try:
        if kind == "cron":
            spec = model.CronSpec(values["cron"], timezone)
        elif kind == "every":
            spec = model.IntervalSpec(values["every_ms"])
        else:
            at_value = values["at"]
            text = at_value if isinstance(at_value, str) else at_value.isoformat()
            spec = model.OnceSpec(parse_instant(text, timezone))
        return spec, make_trigger(spec)
    except InvalidArgument as e:
        (at / kind).problem(str(e))
        return None


def _check_jitter(
    jitter_ms: int, trigger: tuple[model.TriggerSpec, Trigger], table: Mapping[str, object], at: At
) -> None:
    """A jitter bound longer than the period would push a firing past the next occurrence."""
    period_ms = trigger[1].period_hint_ms()
    if period_ms is None or jitter_ms <= period_ms:
        return
    own = "jitter" in table
    kind = next(k for k in TRIGGER_KEYS if k in table)
    (at / ("jitter" if own else kind)).problem(
        f"jitter {format_duration(jitter_ms)} is longer than the period "
        f"{format_duration(period_ms)}" + ("" if own else " (jitter from defaults.jitter)")
    )
