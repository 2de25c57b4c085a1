"""How the admin API's values read to a human: sizes, durations, triggers, tasks, exits.

Shared by every command that shows the same kind of value, so a schedule's trigger or a run's
exit reads the same in ``schedules list``, ``schedules show`` and ``dlq show``. ``--json`` never
goes through here: scripts get the daemon's values unchanged.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from schedd.cli import render


def size(n: int | None) -> str:
    from schedd.units import format_size

    return "-" if n is None else format_size(n)


def duration(n: int | None) -> str:
    from schedd.units import format_duration

    return "-" if n is None else format_duration(n)


def exit_text(run: Mapping[str, Any]) -> Any:
    return run["exit_code"] if run["signal"] is None else f"signal {run['signal']}"


def trigger_text(t: Mapping[str, Any]) -> str:
    match t["kind"]:
        case "cron":
            return f"cron {t['cron']}"
        case "every":
            return f"every {duration(t['every_ms'])}"
        case _:
            return f"at {t['at']}"


def task_fields(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
    if "python" in task:
        return [
            ("python", task["python"]),
            ("args", render.inline_json(task["args"])),
            ("kwargs", render.inline_json(task["kwargs"])),
        ]
    if task["shell"]:
        return [("shell", task["command"][0]), ("cwd", task["cwd"])]
    return [("command", shlex.join(task["command"])), ("cwd", task["cwd"])]


def schedule_fields(s: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A schedule as ``schedules show`` and ``schedules add`` print it."""
    policies = s["policies"]
    # Only `schedules show` knows the jitter drawn for the next occurrence.
    jitter = [("jitter", duration(s["jitter_ms"]))] if "jitter_ms" in s else []
    return [
        ("name", s["name"]),
        ("source", s["source"]),
        ("trigger", trigger_text(s["trigger"])),
        ("timezone", s["timezone"]),
        ("paused", s["paused"]),
        ("lane", s["lane"]),
        *task_fields(s["task"]),
        *jitter,
        ("misfire", f"{policies['misfire']} (grace {duration(policies['misfire_grace_ms'])})"),
        ("overlap", policies["overlap"]),
        ("timeout", duration(policies["timeout_ms"])),
        ("attempts", policies["retry"]["max_attempts"]),
        ("next fire", s["next_fire_at"]),
        ("fired through", s["fired_through_at"]),
        ("last", f"{s['last_state'] or '-'} at {s['last_finished_at'] or '-'}"),
    ]


def firing_line(f: Mapping[str, Any], created: bool) -> str:
    """One line for a firing that a request made, or found already made (same key)."""
    made = "created" if created else "already exists"
    return f"{f['key']}: {made} (firing {f['id']}, {f['state']}, due {f['due_at']})"
