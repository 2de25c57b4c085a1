"""``schedctl status`` (the one screen an operator opens first) and ``schedctl metrics``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from schedd.cli import render
from schedd.cli.app import JsonOpt, call
from schedd.cli.describe import duration, size


def status(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Everything about the daemon in one place."""
    s = call(ctx, "status")
    if json:
        render.emit_json(s)
        return
    store, workers = s["store"], s["workers"]
    render.fields(
        [
            ("version", s["version"]),
            ("pid", s["pid"]),
            ("node", _node_text(s["node"])),
            ("uptime", duration(s["uptime_ms"])),
            ("config", f"{s['config']['path']} (sha256 {s['config']['sha256'][:12]})"),
            (
                "store",
                f"{store['path']} ({size(store['size_bytes'])}, wal {size(store['wal_bytes'])})",
            ),
            (
                "schema",
                f"v{store['schema_version']}, synchronous={store['synchronous']},"
                f" sqlite {store['sqlite_version']}",
            ),
            ("schedules", s["schedules"]),
            ("wheel", f"{s['wheel']['handles']} handle(s)"),
            ("queue", _queue_text(s["queue"])),
            ("catch-up", _catchup_text(s["catchup"])),
            ("workers", f"{workers['alive']} alive, {workers['busy']}/{workers['max']} busy"),
            ("python pool", _pool_text(workers["python"])),
            ("unfinished", s["firings"]["unfinished"]),
            ("dlq", _dlq_text(s["dlq"])),
            ("last firing", s["last_firing_at"]),
            ("clock jumps", _jumps_text(s["clock"])),
        ]
    )
    lanes: Mapping[str, Mapping[str, Any]] = s["lanes"]
    if not lanes:
        return
    render.table(
        ["LANE", "READY", "RUNNING", "OLDEST READY", "LAG"],
        [
            [
                name,
                lane["ready"],
                lane["running"],
                lane["oldest_ready_at"],
                duration(lane["lag_ms"]),
            ]
            for name, lane in sorted(lanes.items())
        ],
    )


def _queue_text(queue: Mapping[str, Any]) -> str:
    return (
        f"{queue['ready']} ready in memory (max {queue['max_ready']}, peak {queue['peak']}),"
        f" {queue['running']} running"
    )


def _catchup_text(catchup: Mapping[str, Any]) -> str:
    if not catchup["draining"]:
        return f"{catchup['backlog']} firing(s) waiting"
    return (
        f"{catchup['backlog']} firing(s) at {catchup['rate_per_s']:g}/s,"
        f" about {duration(catchup['eta_ms'])} to drain"
    )


def _node_text(node: Mapping[str, Any]) -> str:
    machine = node["machine_id"]
    return node["hostname"] if machine is None else f"{node['hostname']} (machine-id {machine})"


def _pool_text(pool: Mapping[str, Any]) -> str:
    return (
        f"{pool['size']} worker(s): {pool['idle']} idle, {pool['busy']} busy,"
        f" {pool['starting']} starting; {pool['recycled']} recycled,"
        f" {pool['replaced']} replaced"
    )


def _dlq_text(dlq: Mapping[str, Any]) -> str:
    if not dlq["size"]:
        return "0 firing(s)"
    return (
        f"{dlq['size']} firing(s), oldest {dlq['oldest_at']} ({duration(dlq['oldest_age_ms'])} ago)"
    )


def _jumps_text(clock: Mapping[str, Any]) -> str:
    if not clock["jumps"]:
        return "0"
    return f"{clock['jumps']} (last {clock['last_jump_ms']} ms at {clock['last_jump_at']})"


def metrics(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Prometheus metrics, in the text exposition format (as the HTTP endpoint serves them)."""
    m = call(ctx, "metrics")
    if json:
        render.emit_json(m)
        return
    render.text(m["text"])
