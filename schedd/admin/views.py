"""The JSON shapes of the admin answers and the argument readers the operations share.

Field names here are the stable scripting surface (``schedctl --json`` prints them unchanged,
``docs/admin-protocol.md`` lists them): add fields, never rename them. Times are UTC RFC 3339
strings with milliseconds (``*_at``), durations integer milliseconds (``*_ms``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schedd.errors import InvalidArgument
from schedd.keys import format_instant, parse_instant
from schedd.model import CronSpec, IntervalSpec, OnceSpec, ScheduleSpec
from schedd.store.records import FiringRecord, RunRecord, ScheduleRecord

#: Most rows one page answers with.
MAX_PAGE = 1000
#: Longest idempotency key a caller may choose (keys are shown in tables and logs).
MAX_KEY_CHARS = 512
MIN_INSTANT_MS = 0
MAX_INSTANT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def at(ms: int | None) -> str | None:
    return None if ms is None else format_instant(ms)


def int_arg(args: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"{name}: expected an integer from {lo} to {hi}, got {value!r}")
    return value


def str_arg(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name}: expected a non-empty string, got {value!r}")
    return value


def opt_str_arg(args: Mapping[str, Any], name: str) -> str | None:
    return str_arg(args, name) if name in args else None


def bool_arg(args: Mapping[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name}: expected true or false, got {value!r}")
    return value


def time_arg(args: Mapping[str, Any], name: str) -> int:
    """An instant given as RFC 3339 text; one without an offset is read as UTC."""
    text = str_arg(args, name)
    try:
        ms = parse_instant(text)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{name}: {exc}") from None
    if not MIN_INSTANT_MS <= ms <= MAX_INSTANT_MS:
        raise InvalidArgument(f"{name}: {text!r} is outside years 1970-9999")
    return ms


def key_arg(args: Mapping[str, Any], name: str = "key") -> str | None:
    """A caller-chosen idempotency key: printable text, at most ``MAX_KEY_CHARS``."""
    if name not in args:
        return None
    key = str_arg(args, name)
    if len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise InvalidArgument(
            f"{name}: expected at most {MAX_KEY_CHARS} printable characters, got {key[:80]!r}"
        )
    return key


def trigger_summary(spec: ScheduleSpec) -> dict[str, Any]:
    match spec.trigger:
        case CronSpec(expr, tz):
            return {"kind": "cron", "cron": expr, "timezone": tz}
        case IntervalSpec(every_ms, anchor_ms):
            return {"kind": "every", "every_ms": every_ms, "anchor_at": at(anchor_ms)}
        case OnceSpec(at_ms):
            return {"kind": "at", "at": at(at_ms)}


def zone_of(spec: ScheduleSpec) -> str:
    return spec.trigger.timezone if isinstance(spec.trigger, CronSpec) else "UTC"


def schedule_json(rec: ScheduleRecord) -> dict[str, Any]:
    spec = rec.spec
    return {
        "name": spec.name,
        "source": spec.source.value,
        "trigger": trigger_summary(spec),
        "timezone": zone_of(spec),
        "paused": rec.paused,
        "next_fire_at": at(rec.next_fire_ms),
        "next_due_at": at(rec.next_due_ms),
        "fired_through_at": at(rec.fired_through_ms),
        "last_state": rec.last_state,
        "last_finished_at": at(rec.last_finished_ms),
        "lane": spec.lane,
    }


def firing_json(f: FiringRecord) -> dict[str, Any]:
    return {
        "id": f.id,
        "key": f.key,
        "schedule": f.schedule,
        "scheduled_for": format_instant(f.scheduled_for_ms),
        "due_at": format_instant(f.due_ms),
        "state": f.state.value,
        "attempt": f.attempt,
        "crashes": f.crashes,
        "lane": f.lane,
        "reason": f.reason,
        "retry_at": at(f.retry_at_ms),
        "updated_at": format_instant(f.updated_ms),
    }


def run_json(r: RunRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "key": r.key,
        "schedule": r.schedule,
        "attempt": r.attempt,
        "state": r.state,
        "pid": r.process.pid if r.process else None,
        "started_at": format_instant(r.started_ms),
        "ended_at": at(r.ended_ms),
        "duration_ms": None if r.ended_ms is None else r.ended_ms - r.started_ms,
        "exit_code": r.exit_code,
        "signal": r.signal,
        "reason": r.reason,
        "output_bytes": r.output_bytes,
        "output_truncated": r.output_truncated,
    }
    if r.output is not None:
        out["output"] = r.output.decode("utf-8", errors="replace")
    return out
