"""``schedctl``: drive a running schedd through its admin socket.

The socket is found from ``--socket``, else ``$SCHEDD_SOCKET``, else ``[admin] socket`` of
``--config FILE``, else the packaged default ``/run/schedd/schedd.sock``. ``schedctl`` never
opens the database: the daemon is the only writer, and reads through it are consistent.
Exit codes are listed in :mod:`schedd.cli.exitcodes` and docs/cli.md.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from schedd import __version__
from schedd.cli import exitcodes, render
from schedd.errors import InvalidArgument, ScheddError

DEFAULT_SOCKET = Path("/run/schedd/schedd.sock")

app = typer.Typer(no_args_is_help=True, help="Control a running schedd.")
schedules_app = typer.Typer(no_args_is_help=True, help="Inspect schedules.")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect runs and their output.")
dlq_app = typer.Typer(
    no_args_is_help=True,
    help="The dead-letter queue (dead and quarantined firings): inspect, retry, purge.",
)
app.add_typer(schedules_app, name="schedules")
app.add_typer(runs_app, name="runs")
app.add_typer(dlq_app, name="dlq")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@dataclass
class Target:
    socket: Path


def _version(value: bool) -> None:
    if value:
        typer.echo(f"schedctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    socket: Annotated[
        Path | None,
        typer.Option("--socket", "-s", envvar="SCHEDD_SOCKET", help="The admin socket."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Find the socket in this config file."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    if socket is None and config is not None:
        from schedd.config import load_config

        try:
            socket = load_config(config).admin.socket
        except ScheddError as exc:
            _fail(exc)
    ctx.obj = Target(socket or DEFAULT_SOCKET)


def _fail(exc: ScheddError) -> NoReturn:
    typer.echo(f"schedctl: {exc}", err=True)
    raise typer.Exit(exitcodes.for_error(exc))


def call(ctx: typer.Context, op: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Any:
    from schedd.admin.client import AdminClient

    target: Target = ctx.obj
    try:
        with AdminClient(target.socket) as client:
            return client.call(op, args or {}, **kw)
    except ScheddError as exc:
        _fail(exc)


def _bytes(n: int | None) -> str:
    from schedd.units import format_size

    return "-" if n is None else format_size(n)


def _ms(n: int | None) -> str:
    from schedd.units import format_duration

    return "-" if n is None else format_duration(n)


def _duration(text: str, option: str) -> int:
    from schedd.units import parse_duration

    try:
        return parse_duration(text)
    except ScheddError as exc:
        _fail(InvalidArgument(f"{option}: {exc}"))


def _exit_text(run: Mapping[str, Any]) -> Any:
    return run["exit_code"] if run["signal"] is None else f"signal {run['signal']}"


@app.command()
def status(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Everything about the daemon in one place."""
    s = call(ctx, "status")
    if json:
        render.emit_json(s)
        return
    store, clock = s["store"], s["clock"]
    store_text = (
        f"{store['path']} ({_bytes(store['size_bytes'])}, wal {_bytes(store['wal_bytes'])})"
    )
    schema_text = (
        f"v{store['schema_version']}, synchronous={store['synchronous']},"
        f" sqlite {store['sqlite_version']}"
    )
    render.fields(
        [
            ("version", s["version"]),
            ("pid", s["pid"]),
            ("uptime", _ms(s["uptime_ms"])),
            ("config", f"{s['config']['path']} (sha256 {s['config']['sha256'][:12]})"),
            ("store", store_text),
            ("schema", schema_text),
            ("schedules", s["schedules"]),
            ("wheel", f"{s['wheel']['handles']} handle(s)"),
            ("queue", f"{s['queue']['ready']} ready, {s['queue']['running']} running"),
            ("workers", f"{s['workers']['busy']}/{s['workers']['max']} busy"),
            ("python pool", _pool_text(s["workers"]["python"])),
            ("unfinished", s["firings"]["unfinished"]),
            ("dlq", _dlq_text(s["dlq"])),
            ("last firing", s["last_firing_at"]),
            (
                "clock jumps",
                f"{clock['jumps']}"
                + (
                    f" (last {clock['last_jump_ms']} ms at {clock['last_jump_at']})"
                    if clock["jumps"]
                    else ""
                ),
            ),
        ]
    )


def _pool_text(pool: Mapping[str, Any]) -> str:
    return (
        f"{pool['size']} worker(s): {pool['idle']} idle, {pool['busy']} busy,"
        f" {pool['starting']} starting; {pool['recycled']} recycled,"
        f" {pool['replaced']} replaced"
    )


def _dlq_text(dlq: Mapping[str, Any]) -> str:
    if not dlq["size"]:
        return "0 firing(s)"
    return f"{dlq['size']} firing(s), oldest {dlq['oldest_at']} ({_ms(dlq['oldest_age_ms'])} ago)"


def _trigger_text(t: Mapping[str, Any]) -> str:
    match t["kind"]:
        case "cron":
            return f"cron {t['cron']}"
        case "every":
            return f"every {_ms(t['every_ms'])}"
        case _:
            return f"at {t['at']}"


@schedules_app.command("list")
def schedules_list(ctx: typer.Context, json: JsonOpt = False) -> None:
    """All schedules, with their next fire time and last result."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = call(ctx, "schedules.list", {"after": after} if after else {})
        items += page["schedules"]
        after = page["next"]
        if after is None:
            break
    if json:
        render.emit_json({"schedules": items})
        return
    render.table(
        ["NAME", "TRIGGER", "TZ", "NEXT FIRE", "LAST", "PAUSED", "SOURCE"],
        [
            [
                s["name"],
                _trigger_text(s["trigger"]),
                s["timezone"],
                s["next_fire_at"],
                s["last_state"],
                s["paused"],
                s["source"],
            ]
            for s in items
        ],
    )


@schedules_app.command("show")
def schedules_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Schedule name.")],
    next_: Annotated[
        int,
        typer.Option(
            "--next", "-n", min=0, max=1000, help="How many upcoming occurrences to list."
        ),
    ] = 5,
    json: JsonOpt = False,
) -> None:
    """One schedule in full, with its next occurrences in UTC and local time."""
    s = call(ctx, "schedules.show", {"name": name, "next": next_})
    if json:
        render.emit_json(s)
        return
    task = s["task"]
    render.fields(
        [
            ("name", s["name"]),
            ("source", s["source"]),
            ("trigger", _trigger_text(s["trigger"])),
            ("timezone", s["timezone"]),
            ("paused", s["paused"]),
            ("command", " ".join(task["command"])),
            ("cwd", task["cwd"]),
            ("jitter", _ms(s["jitter_ms"])),
            (
                "misfire",
                f"{s['policies']['misfire']} (grace {_ms(s['policies']['misfire_grace_ms'])})",
            ),
            ("overlap", s["policies"]["overlap"]),
            ("timeout", _ms(s["policies"]["timeout_ms"])),
            ("fired through", s["fired_through_at"]),
            ("last", f"{s['last_state'] or '-'} at {s['last_finished_at'] or '-'}"),
        ]
    )
    if s["next"]:
        render.table(["NEXT (UTC)", "LOCAL"], [[o["utc"], o["local"]] for o in s["next"]])


ScheduleFilter = Annotated[
    str | None, typer.Option("--schedule", help="Only this schedule's entries.")
]
PageLimit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")]


def _page(ctx: typer.Context, op: str, schedule: str | None, limit: int) -> Any:
    """The first page of a newest-first list, optionally for one schedule."""
    args: dict[str, Any] = {"limit": limit}
    if schedule:
        args["schedule"] = schedule
    return call(ctx, op, args)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    schedule: ScheduleFilter = None,
    limit: PageLimit = 50,
    json: JsonOpt = False,
) -> None:
    """Recent runs, newest first."""
    page = _page(ctx, "runs.list", schedule, limit)
    if json:
        render.emit_json(page)
        return
    render.table(
        ["ID", "SCHEDULE", "KEY", "ATTEMPT", "STATE", "STARTED", "DURATION", "EXIT"],
        [
            [
                r["id"],
                r["schedule"],
                r["key"],
                r["attempt"],
                r["state"],
                r["started_at"],
                _ms(r["duration_ms"]),
                _exit_text(r),
            ]
            for r in page["runs"]
        ],
    )


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="Run id (from `runs list`).", min=1)],
    json: JsonOpt = False,
) -> None:
    """One run: exit status, duration, and the tail of its output."""
    r = call(ctx, "runs.show", {"id": run_id})
    if json:
        render.emit_json(r)
        return
    render.fields(
        [
            ("id", r["id"]),
            ("schedule", r["schedule"]),
            ("key", r["key"]),
            ("attempt", r["attempt"]),
            ("state", r["state"]),
            ("pid", r["pid"]),
            ("started", r["started_at"]),
            ("ended", r["ended_at"]),
            ("duration", _ms(r["duration_ms"])),
            ("exit code", r["exit_code"]),
            ("signal", r["signal"]),
            ("reason", r["reason"]),
            (
                "output",
                f"{_bytes(r['output_bytes'])}"
                + (" (tail; truncated)" if r["output_truncated"] else ""),
            ),
        ]
    )
    if r.get("output"):
        render.text(r["output"])


@app.command("wait")
def wait(
    ctx: typer.Context,
    key: Annotated[
        str | None, typer.Option("--key", help="Wait for this firing to finish.")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="Wait for this schedule's firings.")
    ] = None,
    count: Annotated[
        int, typer.Option("--count", min=1, help="With --schedule: how many finished firings.")
    ] = 1,
    timeout: Annotated[
        str, typer.Option("--timeout", help="Give up after this long (e.g. 30s).")
    ] = "30s",
    json: JsonOpt = False,
) -> None:
    """Block until a firing finishes (or a schedule has COUNT finished ones); exit 8 on timeout."""
    timeout_ms = _duration(timeout, "--timeout")
    args: dict[str, Any] = {"timeout_ms": timeout_ms}
    if key is not None:
        args["key"] = key
    if schedule is not None:
        args["schedule"], args["count"] = schedule, count
    result = call(ctx, "wait", args, timeout_s=timeout_ms / 1000 + 30)
    if json:
        render.emit_json(result)
    elif key is not None:
        f = result.get("firing")
        render.text(
            f"{key}: not found" if f is None else f"{key}: {f['state']} (attempt {f['attempt']})"
        )
    else:
        render.text(f"{schedule}: {result.get('finished', 0)} finished firing(s)")
    if not result["done"]:
        raise typer.Exit(exitcodes.TIMEOUT)


FiringRef = Annotated[
    str,
    typer.Argument(
        metavar="ID_OR_KEY", help="A firing id (digits only, from `dlq list`) or its key."
    ),
]


def _firing_ref(ref: str) -> dict[str, Any]:
    """Digits name a firing id; anything else is a key (a schedule's keys always have an ``@``)."""
    return {"id": int(ref)} if ref.isascii() and ref.isdigit() else {"key": ref}


def _task_fields(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
    if "python" in task:
        return [
            ("python", task["python"]),
            ("args", render.inline_json(task["args"])),
            ("kwargs", render.inline_json(task["kwargs"])),
        ]
    if task["shell"]:
        return [("shell", task["command"][0]), ("cwd", task["cwd"])]
    return [("command", shlex.join(task["command"])), ("cwd", task["cwd"])]


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    schedule: ScheduleFilter = None,
    limit: PageLimit = 50,
    json: JsonOpt = False,
) -> None:
    """Dead and quarantined firings, newest first."""
    page = _page(ctx, "dlq.list", schedule, limit)
    if json:
        render.emit_json(page)
        return
    render.table(
        ["ID", "SCHEDULE", "KEY", "STATE", "ATTEMPT", "CRASHES", "REASON", "UPDATED"],
        [
            [
                f["id"],
                f["schedule"],
                f["key"],
                f["state"],
                f["attempt"],
                f["crashes"],
                f["reason"],
                f["updated_at"],
            ]
            for f in page["firings"]
        ],
    )


@dlq_app.command("show")
def dlq_show(ctx: typer.Context, ref: FiringRef, json: JsonOpt = False) -> None:
    """One dead-letter firing: its task, and every attempt with its exit status and output."""
    f = call(ctx, "dlq.show", _firing_ref(ref))
    if json:
        render.emit_json(f)
        return
    render.fields(
        [
            ("id", f["id"]),
            ("key", f["key"]),
            ("schedule", f["schedule"]),
            ("state", f["state"]),
            ("reason", f["reason"]),
            ("attempt", f["attempt"]),
            ("crashes", f["crashes"]),
            ("lane", f["lane"]),
            ("tenant", f["tenant"]),
            ("scheduled for", f["scheduled_for"]),
            ("updated", f["updated_at"]),
            *_task_fields(f["task"]),
        ]
    )
    attempts = f["attempts"]
    render.table(
        ["ATTEMPT", "RUN", "STATE", "STARTED", "DURATION", "EXIT", "REASON"],
        [
            [
                a["attempt"],
                a["id"],
                a["state"],
                a["started_at"],
                _ms(a["duration_ms"]),
                _exit_text(a),
                a["reason"],
            ]
            for a in attempts
        ],
    )
    for a in attempts:
        if a.get("output"):
            tail = ", tail; truncated" if a["output_truncated"] else ""
            render.text(f"--- attempt {a['attempt']} output ({_bytes(a['output_bytes'])}{tail})")
            render.text(a["output"])


@dlq_app.command("retry")
def dlq_retry(ctx: typer.Context, ref: FiringRef, json: JsonOpt = False) -> None:
    """Run a dead-letter firing again: the same key, the next attempt."""
    f = call(ctx, "dlq.retry", _firing_ref(ref))
    if json:
        render.emit_json(f)
        return
    render.text(f"{f['key']}: re-queued as attempt {f['attempt']} (firing {f['id']})")


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID_OR_KEY]", help="The firing to delete (or use --all).", show_default=False
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Delete every dead-letter firing (see --older-than).")
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="With --all: only those in the queue this long (7d)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Delete dead-letter firings with their runs and output: one, or --all [--older-than AGE]."""
    if older_than is not None and not all_:
        _fail(InvalidArgument("--older-than works only with --all"))
    if all_ == (ref is not None):
        _fail(InvalidArgument("give either a firing ID_OR_KEY or --all"))
    args: dict[str, Any] = {"all": True} if ref is None else _firing_ref(ref)
    if older_than is not None:
        args["older_than_ms"] = _duration(older_than, "--older-than")
    result = call(ctx, "dlq.purge", args)
    if json:
        render.emit_json(result)
        return
    render.text(f"purged {result['purged']} firing(s)")


def main() -> None:
    app(prog_name="schedctl")


if __name__ == "__main__":
    main()
