"""``schedctl``: drive a running schedd through its admin socket.

This module only assembles the command tree (DESIGN §8 names it; scripts rely on every name).
Each command group lives in its own module; :mod:`schedd.cli.app` holds what they share: the
socket lookup, the call to the daemon and the way errors become exit statuses
(:mod:`schedd.cli.exitcodes`, docs/cli.md).
"""

from __future__ import annotations

from schedd.cli import dlq, firings, reload, runs, schedules, status
from schedd.cli.app import app

app.command("status")(status.status)
app.command("metrics")(status.metrics)
app.add_typer(schedules.app, name="schedules")
app.command("submit")(firings.submit)
app.add_typer(runs.app, name="runs")
app.add_typer(dlq.app, name="dlq")
app.command("backlog")(firings.backlog)
app.add_typer(firings.app, name="firings")
app.command("reload")(reload.reload)


def main() -> None:
    app(prog_name="schedctl")


if __name__ == "__main__":
    main()
