"""Firings outside any schedule's rhythm: ``submit`` one, see the ``backlog``, remove a bad batch.

``backlog`` and ``firings remove`` are the pair an operator reaches for when something enqueued
too much or the wrong thing: the first finds the schedule, lane and state where it piled up
(and the biggest payloads), the second removes it. Removal is done in batches of
:data:`BATCH`, each its own short request, so the daemon keeps dispatching between them and an
interrupted removal leaves a consistent, smaller backlog behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from schedd.cli import render, specs
from schedd.cli.app import JsonOpt, call, fail, invalid
from schedd.cli.describe import firing_line, size
from schedd.errors import InvalidArgument

app = typer.Typer(no_args_is_help=True, help="Remove queued firings in bulk.")

#: Firings removed per request; also the size above which a terminal gets a progress bar.
BATCH = 1000
#: Keys a removal reports back, as the op does.
SAMPLE = 20


def submit(
    ctx: typer.Context,
    argv: specs.ArgvArg = None,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Start at this RFC 3339 time [default: now]."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", metavar="KEY", help="Idempotency key: an existing key is not submitted again."
        ),
    ] = None,
    lane: Annotated[
        str | None, typer.Option("--lane", metavar="LANE", help="Run in this lane.")
    ] = None,
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
    """Enqueue one job (ARGV or --python); prints its key and whether it was created."""
    try:
        task = specs.task_from(ctx.params)
    except InvalidArgument as exc:
        fail(exc)
    optional = {"key": key, "at": at, "lane": lane}
    result = call(
        ctx, "submit", {"task": task, **{k: v for k, v in optional.items() if v is not None}}
    )
    if json:
        render.emit_json(result)
        return
    render.text(firing_line(result["firing"], result["created"]))


def backlog(
    ctx: typer.Context,
    schedule: Annotated[
        str | None, typer.Option("--schedule", metavar="NAME", help="Only this schedule's firings.")
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top", metavar="N", min=0, max=100, help="How many of the largest payloads."
        ),
    ] = 10,
    json: JsonOpt = False,
) -> None:
    """What is queued or scheduled: counts by schedule, lane and state; the largest payloads."""
    args: dict[str, Any] = {"top": top}
    if schedule is not None:
        args["schedule"] = schedule
    b = call(ctx, "backlog", args)
    if json:
        render.emit_json(b)
        return
    render.table(
        ["SCHEDULE", "LANE", "STATE", "COUNT", "OLDEST DUE", "PAYLOAD"],
        [
            [
                g["schedule"],
                g["lane"],
                g["state"],
                g["count"],
                g["oldest_due_at"],
                size(g["payload_bytes"]),
            ]
            for g in b["groups"]
        ],
    )
    total = b["total"]
    render.text(f"total: {total['count']} firing(s), {size(total['payload_bytes'])} of payload")
    if b["largest"]:
        render.table(
            ["ID", "KEY", "SCHEDULE", "STATE", "DUE", "PAYLOAD"],
            [
                [
                    f["id"],
                    f["key"],
                    f["schedule"],
                    f["state"],
                    f["due_at"],
                    size(f["payload_bytes"]),
                ]
                for f in b["largest"]
            ],
            title="largest payloads",
        )


@app.command("remove")
def firings_remove(
    ctx: typer.Context,
    schedule: Annotated[
        str,
        typer.Option(
            "--schedule",
            metavar="NAME",
            help="The schedule (or @submit) whose firings to remove.",
            show_default=False,
        ),
    ],
    match: Annotated[
        str | None,
        typer.Option("--match", metavar="TEXT", help="Only firings whose key or payload has TEXT."),
    ] = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="scheduled, committed or failed (repeatable) [default: all three].",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and show some matches; remove nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Remove every match.")] = False,
    json: JsonOpt = False,
) -> None:
    """Cancel queued firings of a schedule in bulk (running ones are never touched)."""
    if dry_run == yes:
        invalid(
            "give --dry-run to see what matches, or --yes to remove it"
            + (" (not both)" if yes else "")
        )
    request: dict[str, Any] = {"schedule": schedule}
    if match is not None:
        request["match"] = match
    if state:
        request["states"] = state
    if dry_run:
        r = call(ctx, "firings.remove", {**request, "dry_run": True})
    else:
        r = _remove_all(ctx, request)
    if json:
        render.emit_json(r)
        return
    if dry_run:
        shown = f", for example ({len(r['sample'])}):" if r["sample"] else ""
        render.text(f"{r['matched']} firing(s) match{shown}")
        for k in r["sample"]:
            render.text(f"  {k}")
        return
    render.text(f"removed {r['removed']} firing(s)")
    if r["remaining"]:
        render.text(f"{r['remaining']} matching firing(s) were not removed; run it again")


def _remove_all(ctx: typer.Context, request: Mapping[str, Any]) -> dict[str, Any]:
    """Batches until nothing matches (or a batch removes nothing), summed in the op's shape."""
    batch = {**request, "limit": BATCH}
    last = call(ctx, "firings.remove", batch)
    matched, removed, sample = last["matched"], last["removed"], list(last["sample"])
    with _progress(matched) as advance:
        advance(last["removed"])
        while last["remaining"] and last["removed"]:
            last = call(ctx, "firings.remove", batch)
            removed += last["removed"]
            sample += last["sample"][: SAMPLE - len(sample)]
            advance(last["removed"])
    return {
        "matched": matched,
        "removed": removed,
        "remaining": last["remaining"],
        "sample": sample,
    }


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A bar on stderr for a removal worth watching; nothing for a pipe or a small one."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal or total <= BATCH:
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task("removing", total=total)
        yield lambda n: bar.advance(task, n)
