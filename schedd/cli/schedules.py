"""``schedctl schedules``: the schedules, and the changes an operator makes to them at run time.

Schedules added here are stored by the daemon with source ``api`` and survive restarts; the
ones from the config file are changed in the file and applied with ``schedctl reload``. Pausing
works on both, and ``trigger``/``backfill`` only add firings, so neither touches a definition.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from schedd.cli import render, specs
from schedd.cli.app import JsonOpt, call, fail, invalid
from schedd.cli.describe import firing_line, schedule_fields, trigger_text
from schedd.errors import InvalidArgument

app = typer.Typer(no_args_is_help=True, help="List, add, change and run schedules.")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Schedule name.", show_default=False)]

#: Schedules per ``schedules.add_many`` request from ``add --file`` (the daemon's cap), and the
#: most JSON one request carries, far inside the default ``[admin] max_request_bytes`` (1 MiB)
#: even when each schedule brings a large environment or arguments.
FILE_BATCH = 1000
FILE_BATCH_BYTES = 512 * 1024


@app.command("list")
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
                trigger_text(s["trigger"]),
                s["timezone"],
                s["next_fire_at"],
                s["last_state"],
                s["paused"],
                s["source"],
            ]
            for s in items
        ],
    )


@app.command("show")
def schedules_show(
    ctx: typer.Context,
    name: NameArg,
    next_: Annotated[
        int,
        typer.Option(
            "--next",
            "-n",
            metavar="N",
            min=0,
            max=1000,
            help="How many upcoming occurrences to list.",
        ),
    ] = 5,
    json: JsonOpt = False,
) -> None:
    """One schedule in full, with its next occurrences in UTC and local time."""
    s = call(ctx, "schedules.show", {"name": name, "next": next_})
    if json:
        render.emit_json(s)
        return
    render.fields(schedule_fields(s))
    if s["next"]:
        render.table(["NEXT (UTC)", "LOCAL"], [[o["utc"], o["local"]] for o in s["next"]])


@app.command("add")
def schedules_add(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="Schedule name (not with --file).", show_default=False),
    ] = None,
    argv: specs.ArgvArg = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            metavar="FILE",
            help="Add every [schedules.NAME] table of this TOML file (1000 per request).",
        ),
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", metavar="EXPR", help="A cron expression.")
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", metavar="DUR", help="A fixed interval (15m).")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", metavar="TIME", help="Once, at this RFC 3339 time.")
    ] = None,
    tz: Annotated[
        str | None, typer.Option("--tz", metavar="ZONE", help="The cron time zone (IANA).")
    ] = None,
    jitter: Annotated[
        str | None, typer.Option("--jitter", metavar="DUR", help="Random delay bound.")
    ] = None,
    misfire: Annotated[
        str | None,
        typer.Option("--misfire", metavar="POLICY", help="fire_once, fire_all or skip."),
    ] = None,
    lane: Annotated[
        str | None, typer.Option("--lane", metavar="LANE", help="Run in this [lanes.NAME].")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Add it (or them) paused.")] = False,
    python: specs.PythonOpt = None,
    args: specs.ArgsOpt = None,
    kwargs: specs.KwargsOpt = None,
    shell: specs.ShellOpt = False,
    cwd: specs.CwdOpt = None,
    env: specs.EnvOpt = None,
    timeout: specs.TimeoutOpt = None,
    retries: specs.RetriesOpt = None,
    overlap: specs.OverlapOpt = None,
    tenant: specs.TenantOpt = None,
    json: JsonOpt = False,
) -> None:
    """Add a schedule (source api; it persists across restarts) that runs ARGV or --python,
    or with --file every schedule of a file."""
    if file is not None:
        given = [
            p.opts[0] if p.opts[0].startswith("-") else p.human_readable_name
            for p in ctx.command.params
            if p.name not in _FILE_PARAMS and _given(ctx.params.get(p.name or ""))
        ]
        if given:
            invalid(
                f"--file takes every schedule from the file; {', '.join(given)} cannot go with"
                " it (only --paused and --json can)"
            )
        _add_file(ctx, file, paused, json)
        return
    if name is None:
        invalid("missing NAME: give the schedule's name, or --file FILE")
    try:
        task = specs.task_from(ctx.params)
        spec = specs.schedule_table(
            task,
            cron=cron,
            every=every,
            at=at,
            timezone=tz,
            jitter=jitter,
            misfire=misfire,
            lane=lane,
        )
    except InvalidArgument as exc:
        fail(exc)
    request: dict[str, Any] = {"name": name, "spec": spec}
    if paused:
        request["paused"] = True
    s = call(ctx, "schedules.add", request)
    if json:
        render.emit_json(s)
        return
    render.fields(schedule_fields(s))


#: What ``add --file`` allows beside the file.
_FILE_PARAMS = frozenset({"file", "paused", "json"})


def _given(value: object) -> bool:
    """Whether a parameter was given: not its default (None, False, no values). ``is``, since
    ``--retries 0`` is given and ``0 == False``."""
    return not (value is None or value is False or value in ([], ()))


def _add_file(ctx: typer.Context, path: Path, paused: bool, json: bool) -> None:
    """Send the file's schedules in requests of up to :data:`FILE_BATCH`, in file order.

    Each request is all-or-nothing in the daemon; the file as a whole is not. A failed request
    stops here, and what earlier requests added stays: the message says how far it got, and
    maps the daemon's ``schedules[i]`` (an index in the request) to the file's entries."""
    try:
        tables = specs.file_tables(path)
    except InvalidArgument as exc:
        fail(exc)
    added = paused_count = requests = 0
    for batch in _batches(tables, paused):
        try:
            result = call(ctx, "schedules.add_many", {"schedules": batch})
        except typer.Exit:
            typer.echo(
                f"schedctl: {path}: stopped at the request of entries {added + 1}-"
                f"{added + len(batch)} ([schedules.{batch[0]['name']}] to"
                f" [schedules.{batch[-1]['name']}]; schedules[i] is entry {added + 1}+i);"
                f" the {added} of {len(tables)} schedule(s) before it were added",
                err=True,
            )
            raise
        added += result["added"]
        paused_count += result["paused"]
        requests += 1
    summary = {"file": str(path), "added": added, "paused": paused_count, "requests": requests}
    if json:
        render.emit_json(summary)
        return
    render.text(
        f"{path}: {added} schedule(s) added ({paused_count} paused) in {requests} request(s)"
    )


def _batches(tables: dict[str, dict[str, Any]], paused: bool) -> Iterator[list[dict[str, Any]]]:
    """``add_many`` entries in file order, cut at :data:`FILE_BATCH` entries or
    :data:`FILE_BATCH_BYTES` of JSON, whichever comes first (a lone larger entry goes alone)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for name, spec in tables.items():
        entry: dict[str, Any] = {"name": name, "spec": spec}
        if paused:
            entry["paused"] = True
        length = len(jsonlib.dumps(entry))
        if batch and (len(batch) == FILE_BATCH or size + length > FILE_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += length
    if batch:
        yield batch


@app.command("remove")
def schedules_remove(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Remove a schedule added with `add` (its firings and runs stay, as history)."""
    result = call(ctx, "schedules.remove", {"name": name})
    if json:
        render.emit_json(result)
        return
    render.text(f"{result['removed']}: removed")


@app.command("pause")
def schedules_pause(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Stop a schedule firing until `resume` (kept across reload and restart)."""
    _set_paused(ctx, "schedules.pause", name, json)


@app.command("resume")
def schedules_resume(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """Let a paused schedule fire again."""
    _set_paused(ctx, "schedules.resume", name, json)


def _set_paused(ctx: typer.Context, op: str, name: str, json: bool) -> None:
    s = call(ctx, op, {"name": name})
    if json:
        render.emit_json(s)
        return
    state = "paused" if s["paused"] else f"active, next fire {s['next_fire_at'] or '-'}"
    render.text(f"{s['name']}: {state}")


@app.command("trigger")
def schedules_trigger(
    ctx: typer.Context,
    name: NameArg,
    key: Annotated[
        str | None,
        typer.Option("--key", metavar="KEY", help="The firing's key [default: NAME@manual:NOW]."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Run a schedule's task now, even if it is paused; a key that exists is not run again."""
    request: dict[str, Any] = {"name": name}
    if key is not None:
        request["key"] = key
    result = call(ctx, "schedules.trigger", request)
    if json:
        render.emit_json(result)
        return
    render.text(firing_line(result["firing"], result["created"]))


@app.command("backfill")
def schedules_backfill(
    ctx: typer.Context,
    name: NameArg,
    from_: Annotated[
        str, typer.Option("--from", metavar="TIME", help="First instant (RFC 3339), included.")
    ],
    to: Annotated[
        str, typer.Option("--to", metavar="TIME", help="Last instant (RFC 3339), included.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the occurrences; create nothing.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Fire every occurrence in [--from, --to] that has not fired, keyed as if on time."""
    request: dict[str, Any] = {"name": name, "from": from_, "to": to}
    if dry_run:
        request["dry_run"] = True
    r = call(ctx, "schedules.backfill", request)
    if json:
        render.emit_json(r)
        return
    made = (
        f"{r['occurrences'] - r['existing']} would be created"
        if dry_run
        else f"{r['created']} created"
    )
    render.text(
        f"{name}: {r['occurrences']} occurrence(s), {made}, {r['existing']} already existed"
    )
    if r["occurrences"]:
        render.fields([("first", r["first_key"]), ("last", r["last_key"])])
