"""``schedctl dlq``: the dead-letter queue (dead and quarantined firings)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from schedd.cli import render
from schedd.cli.app import JsonOpt, PageLimit, ScheduleFilter, call, duration_ms, invalid
from schedd.cli.describe import duration, exit_text, size, task_fields

app = typer.Typer(
    no_args_is_help=True,
    help="The dead-letter queue (dead and quarantined firings): inspect, retry, purge.",
)

FiringRef = Annotated[
    str,
    typer.Argument(
        metavar="ID_OR_KEY", help="A firing id (digits only, from `dlq list`) or its key."
    ),
]


def _firing_ref(ref: str) -> dict[str, Any]:
    """Digits name a firing id; anything else is a key (a schedule's keys always have an ``@``)."""
    return {"id": int(ref)} if ref.isascii() and ref.isdigit() else {"key": ref}


@app.command("list")
def dlq_list(
    ctx: typer.Context,
    schedule: ScheduleFilter = None,
    limit: PageLimit = 50,
    json: JsonOpt = False,
) -> None:
    """Dead and quarantined firings, newest first."""
    args: dict[str, Any] = {"limit": limit}
    if schedule:
        args["schedule"] = schedule
    page = call(ctx, "dlq.list", args)
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


@app.command("show")
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
            *task_fields(f["task"]),
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
                duration(a["duration_ms"]),
                exit_text(a),
                a["reason"],
            ]
            for a in attempts
        ],
    )
    for a in attempts:
        if a.get("output"):
            tail = ", tail; truncated" if a["output_truncated"] else ""
            render.text(f"--- attempt {a['attempt']} output ({size(a['output_bytes'])}{tail})")
            render.text(a["output"])


@app.command("retry")
def dlq_retry(ctx: typer.Context, ref: FiringRef, json: JsonOpt = False) -> None:
    """Run a dead-letter firing again: the same key, the next attempt."""
    f = call(ctx, "dlq.retry", _firing_ref(ref))
    if json:
        render.emit_json(f)
        return
    render.text(f"{f['key']}: re-queued as attempt {f['attempt']} (firing {f['id']})")


@app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Argument(
            metavar="ID_OR_KEY", help="The firing to delete (or use --all).", show_default=False
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Delete every dead-letter firing (see --older-than).")
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="With --all: only those in the queue this long (7d).",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Delete dead-letter firings with their runs and output: one, or --all [--older-than AGE]."""
    if older_than is not None and not all_:
        invalid("--older-than works only with --all")
    if all_ == (ref is not None):
        invalid("give either a firing ID_OR_KEY or --all")
    args: dict[str, Any] = {"all": True} if ref is None else _firing_ref(ref)
    if older_than is not None:
        args["older_than_ms"] = duration_ms(older_than, "--older-than")
    result = call(ctx, "dlq.purge", args)
    if json:
        render.emit_json(result)
        return
    render.text(f"purged {result['purged']} firing(s)")
