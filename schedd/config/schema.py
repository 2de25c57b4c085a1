"""The key tables: for each section, every TOML key, the field it fills and its converter.

A key that is not in its table is an error with a "did you mean", so adding a key is one line
here plus its field in :mod:`schedd.config.sections`. Tables that appear in more than one place
(the policies of ``[defaults]`` and ``[schedules.NAME]``, ``retry``, ``limits``) are defined
once and spread, so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from schedd import model
from schedd.config import convert as c
from schedd.config.walk import Key, Schema, subtable

_MIB = 1024 * 1024

DAEMON: Schema = {
    "state_dir": Key("state_dir", c.path, required=True),
    "shutdown_grace": Key("shutdown_grace_ms", c.duration()),
}
STORE: Schema = {
    "path": Key("path", c.path),
    "synchronous": Key("synchronous", c.choice("full", "normal")),
    "busy_timeout": Key("busy_timeout_ms", c.duration()),
    "horizon": Key("horizon_ms", c.duration()),
}
ADMIN: Schema = {
    "socket": Key("socket", c.path),
    "mode": Key("mode", c.socket_mode),
    "group": Key("group", c.group),
    "max_request_size": Key("max_request_bytes", c.size(1024)),
    "idle_timeout": Key("idle_timeout_ms", c.duration()),
    "max_connections": Key("max_connections", c.integer(1)),
    "readers": Key("readers", c.principals),
    "operators": Key("operators", c.principals),
}
WORKERS: Schema = {
    "min": Key("min", c.integer(0)),
    "max": Key("max", c.integer(1)),
    "python": Key("python", c.executable),
    "pythonpath": Key("pythonpath", c.directories),
    "max_tasks_per_worker": Key("max_tasks_per_worker", c.integer(1)),
    # A memory bound under 1 MiB is a unit slip (512 meaning MiB, not bytes), never intended.
    "max_worker_rss": Key("max_worker_rss_bytes", c.size(_MIB)),
    "start_timeout": Key("start_timeout_ms", c.duration()),
    "idle_timeout": Key("idle_timeout_ms", c.duration()),
    "output_tail": Key("output_tail_bytes", c.size(1)),
    "env_allow": Key("env_allow", c.env_names),
}
LOGGING: Schema = {
    "level": Key("level", c.choice("debug", "info", "warning", "error")),
    "format": Key("format", c.choice("text", "json")),
}
METRICS: Schema = {
    "listen": Key("listen", c.listen_address),
    "textfile": Key("textfile", c.prom_file),
    "textfile_interval": Key("textfile_interval_ms", c.duration()),
    # 0 is allowed: no schedule gets series of its own, every event counts under "@other".
    "max_schedules": Key("max_schedules", c.integer(0)),
}
HEARTBEAT: Schema = {
    "url": Key("url", c.http_url),
    "interval": Key("interval_ms", c.duration()),
    "method": Key("method", c.choice("GET", "POST")),
    "timeout": Key("timeout_ms", c.duration()),
}
DISPATCH: Schema = {
    "max_ready": Key("max_ready", c.integer(1)),
}
#: Fields of ``schedd.catchup.CatchupSettings``.
CATCHUP: Schema = {
    "rate": Key("rate", c.number(above=0)),
    "min_rate": Key("min_rate", c.number(above=0)),
    "max_rate": Key("max_rate", c.number(above=0)),
    "step": Key("step", c.number(above=0)),
    "max_failure_ratio": Key("max_failure_ratio", c.number(above=0, at_most=1)),
    "window": Key("window", c.integer(1)),
}
#: Fields of ``model.Retry``.
RETRY: Schema = {
    "max_attempts": Key("max_attempts", c.integer(1)),
    "base": Key("base_ms", c.duration()),
    "max": Key("max_ms", c.duration()),
}
#: Fields of ``model.Limits``.
LIMITS: Schema = {
    "memory": Key("memory_bytes", c.size(_MIB)),
    "cpu": Key("cpu_seconds", c.whole_seconds),
    "open_files": Key("open_files", c.integer(1)),
    "core": Key("core_bytes", c.size(0)),
}
#: Shared by ``[defaults]`` and ``[schedules.NAME]``; attrs are ``model.Policies`` fields.
POLICIES: Schema = {
    "misfire": Key("misfire", c.enum(model.Misfire)),
    "misfire_grace": Key("misfire_grace_ms", c.duration()),
    "max_catchup": Key("max_catchup", c.integer(1)),
    "overlap": Key("overlap", c.enum(model.Overlap)),
    "timeout": Key("timeout_ms", c.optional_timeout),
    "kill_grace": Key("kill_grace_ms", c.duration()),
    "retry": Key("retry", subtable(RETRY)),
    "limits": Key("limits", subtable(LIMITS)),
    "on_quarantine": Key("on_quarantine", c.argv),
    "expect_success_within": Key("expect_success_within_ms", c.duration()),
    "on_overdue": Key("on_overdue", c.argv),
}
_TIMING: Schema = {
    "jitter": Key("jitter_ms", c.duration(allow_zero=True)),
    "timezone": Key("timezone", c.zone),
}
DEFAULTS: Schema = {
    **POLICIES,
    **_TIMING,
    "max_payload": Key("max_payload_bytes", c.size(1)),
}
TRIGGER_KEYS = ("cron", "every", "at")
#: The task kinds, each with the keys that belong to it alone.
TASK_KEYS: Mapping[str, tuple[str, ...]] = {
    "command": ("command", "shell", "cwd", "env"),
    "python": ("python", "args", "kwargs"),
}
SCHEDULE: Schema = {
    **POLICIES,
    **_TIMING,
    "cron": Key("cron", c.text),
    "every": Key("every_ms", c.duration()),
    "at": Key("at", c.instant_value),
    "command": Key("command", c.command),
    "shell": Key("shell", c.boolean),
    "cwd": Key("cwd", c.path),
    "env": Key("env", c.env),
    "python": Key("python", c.python_target),
    "args": Key("args", c.json_array),
    "kwargs": Key("kwargs", c.json_table),
    "tenant": Key("tenant", c.text),
    "lane": Key("lane", c.text),
}
TENANT: Schema = {
    "retry_budget": Key("retry_budget", c.rate),
}
#: Fields of ``schedd.lanes.Lane``.
LANE: Schema = {
    "reserved": Key("reserved", c.integer(0)),
    "weight": Key("weight", c.integer(1)),
}
#: ``tenants``, ``lanes`` and ``schedules`` are tables of named tables, read by TENANT, LANE
#: and SCHEDULE.
SECTIONS: Mapping[str, Schema] = {
    "daemon": DAEMON,
    "store": STORE,
    "admin": ADMIN,
    "workers": WORKERS,
    "dispatch": DISPATCH,
    "catchup": CATCHUP,
    "logging": LOGGING,
    "metrics": METRICS,
    "heartbeat": HEARTBEAT,
    "defaults": DEFAULTS,
    "tenants": {},
    "lanes": {},
    "schedules": {},
}
