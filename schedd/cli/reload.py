"""``schedctl reload``: apply the config file's schedules, as SIGHUP does, and say what changed.

Only schedules are reconciled in a running daemon; other sections whose settings changed are
named under ``restart required`` rather than applied half-way. An invalid file is refused whole
(exit 2, every problem listed) and the running config stays.
"""

from __future__ import annotations

import typer

from schedd.cli import render
from schedd.cli.app import JsonOpt, call


def reload(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Re-read the config file and reconcile its schedules (added, changed, removed)."""
    r = call(ctx, "reload")
    if json:
        render.emit_json(r)
        return
    render.fields(
        [
            ("config", f"{r['config']['path']} (sha256 {r['config']['sha256'][:12]})"),
            ("added", ", ".join(r["added"]) or "-"),
            ("changed", ", ".join(r["changed"]) or "-"),
            ("removed", ", ".join(r["removed"]) or "-"),
            ("unchanged", r["unchanged"]),
            ("restart required", ", ".join(r["restart_required"]) or "no"),
        ]
    )
