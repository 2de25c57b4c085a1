"""``schedctl runs``: what ran, what it printed, and waiting for a firing to finish.

``runs wait`` is how a script (or a test) synchronises with the daemon: it blocks in the daemon
on change events, so it returns the moment the condition holds, and exits 8 if it did not hold
in time.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from schedd.cli import exitcodes, render
from schedd.cli.app import JsonOpt, PageLimit, ScheduleFilter, call, duration_ms, invalid
from schedd.cli.describe import duration, exit_text, size

app = typer.Typer(no_args_is_help=True, help="Runs, their output, and waiting for firings.")

RunId = Annotated[int, typer.Argument(metavar="ID", help="Run id (from `runs list`).", min=1)]


@app.command("list")
def runs_list(
    ctx: typer.Context,
    schedule: ScheduleFilter = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", metavar="STATE", help="Only runs in this state (repeatable: any of them)."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar="TIME", help="Only runs started since.")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", metavar="KEY", help="Only this firing's runs.")
    ] = None,
    limit: PageLimit = 50,
    json: JsonOpt = False,
) -> None:
    """Recent runs, newest first."""
    filters = {"schedule": schedule, "states": state or None, "since": since, "key": key}
    page = call(
        ctx, "runs.list", {"limit": limit, **{k: v for k, v in filters.items() if v is not None}}
    )
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
                duration(r["duration_ms"]),
                exit_text(r),
            ]
            for r in page["runs"]
        ],
    )


@app.command("show")
def runs_show(ctx: typer.Context, run_id: RunId, json: JsonOpt = False) -> None:
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
            ("duration", duration(r["duration_ms"])),
            ("exit code", r["exit_code"]),
            ("signal", r["signal"]),
            ("reason", r["reason"]),
            (
                "output",
                f"{size(r['output_bytes'])}"
                + (" (tail; truncated)" if r["output_truncated"] else ""),
            ),
        ]
    )
    if r.get("output"):
        render.text(r["output"])


@app.command("output")
def runs_output(ctx: typer.Context, run_id: RunId, json: JsonOpt = False) -> None:
    """Only the captured output (its kept tail), byte for byte, for piping."""
    r = call(ctx, "runs.show", {"id": run_id})
    if json:
        render.emit_json(r)
        return
    sys.stdout.write(r.get("output") or "")
    if r["output_truncated"]:
        typer.echo(
            f"schedctl: run {run_id} wrote {size(r['output_bytes'])}; this is its kept tail",
            err=True,
        )


@app.command("wait")
def runs_wait(
    ctx: typer.Context,
    key: Annotated[
        str | None,
        typer.Argument(
            metavar="KEY",
            help="Wait for this firing (it need not exist yet).",
            show_default=False,
        ),
    ] = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="With KEY: until it is in this state (repeatable) [default: final].",
        ),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule", metavar="NAME", help="Instead of KEY: until this schedule has --count."
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            metavar="N",
            min=1,
            help="With --schedule: finished firings, all time [default: 1].",
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option("--timeout", metavar="DUR", help="Give up after this long.")
    ] = "30s",
    json: JsonOpt = False,
) -> None:
    """Block until firing KEY finishes (or --schedule has --count finished); exit 8 on timeout."""
    if (key is None) == (schedule is None):
        invalid("give either a firing KEY or --schedule NAME")
    if state and key is None:
        invalid("--state works only with a firing KEY")
    if count is not None and schedule is None:
        invalid("--count works only with --schedule")
    timeout_ms = duration_ms(timeout, "--timeout")
    args: dict[str, Any] = {"timeout_ms": timeout_ms}
    if key is not None:
        args["key"] = key
        if state:
            args["states"] = state
    else:
        args["schedule"], args["count"] = schedule, count or 1
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
