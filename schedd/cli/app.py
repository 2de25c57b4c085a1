"""The root of ``schedctl``: finding the socket, calling the daemon, and failing the same way.

The socket is found from ``--socket``, else ``$SCHEDD_SOCKET``, else ``[admin] socket`` of
``--config FILE``, else the packaged default ``/run/schedd/schedd.sock``. Where it came from is
kept next to the path, because "no daemon is listening" is most often "schedctl looked in the
wrong place", and the operator can only see that when told which rule picked the path.

``schedctl`` never opens the database: the daemon is the only writer, and reads through it are
consistent. Every failure, local or from the daemon, is a :class:`~schedd.errors.ScheddError`
printed as ``schedctl: MESSAGE`` and turned into its exit status (:mod:`schedd.cli.exitcodes`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from schedd import __version__
from schedd.cli import exitcodes
from schedd.errors import DaemonNotRunning, InvalidArgument, PermissionDenied, ScheddError

DEFAULT_SOCKET = Path("/run/schedd/schedd.sock")
SOCKET_ENV = "SCHEDD_SOCKET"

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Control a running schedd.")

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the daemon's answer as JSON (admin-protocol.md).")
]
ScheduleFilter = Annotated[
    str | None, typer.Option("--schedule", metavar="NAME", help="Only this schedule's entries.")
]
PageLimit = Annotated[
    int, typer.Option("--limit", metavar="N", min=1, max=1000, help="At most this many.")
]


@dataclass(frozen=True)
class Target:
    """The socket to talk to, and which rule chose it (shown when nothing answers there)."""

    socket: Path
    source: str


def _version(value: bool) -> None:
    if value:
        typer.echo(f"schedctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    socket: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            "-s",
            help=f"The admin socket [default: ${SOCKET_ENV}, else --config, else {DEFAULT_SOCKET}]",
            show_default=False,
            # Connecting needs write permission on the socket, not read: let connect() decide
            # (and explain) instead of click refusing a 0660 socket as "not readable".
            readable=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Use the [admin] socket of this config file."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = find_target(socket, os.environ.get(SOCKET_ENV) or None, config)


def find_target(socket: Path | None, env: str | None, config: Path | None) -> Target:
    """The first of ``--socket``, ``$SCHEDD_SOCKET``, ``--config``, the default."""
    if socket is not None:
        return Target(socket, "--socket")
    if env is not None:
        return Target(Path(env), f"${SOCKET_ENV}")
    if config is not None:
        from schedd.config import load_config

        try:
            return Target(load_config(config).admin.socket, f"[admin] socket in {config}")
        except ScheddError as exc:
            fail(exc)
    return Target(DEFAULT_SOCKET, f"the default (no --socket, ${SOCKET_ENV} or --config was given)")


def fail(exc: ScheddError, *hints: str) -> NoReturn:
    typer.echo(f"schedctl: {exc}", err=True)
    for hint in hints:
        typer.echo(f"schedctl: {hint}", err=True)
    raise typer.Exit(exitcodes.for_error(exc))


def invalid(message: str) -> NoReturn:
    """A command line the daemon need not see: exit 2 before connecting."""
    fail(InvalidArgument(message))


def call(ctx: typer.Context, op: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Any:
    from schedd.admin.client import AdminClient

    target: Target = ctx.obj
    try:
        with AdminClient(target.socket) as client:
            return client.call(op, args or {}, **kw)
    except DaemonNotRunning as exc:
        fail(
            exc,
            f"that socket path came from {target.source};"
            " under systemd, start schedd with `systemctl start schedd`",
        )
    except PermissionDenied as exc:
        fail(
            exc,
            f"socket {target.socket} (from {target.source}): connecting needs membership in"
            " the socket's group ([admin] group); each request needs an entry in [admin]"
            " readers (to read) or [admin] operators (to change)",
        )
    except ScheddError as exc:
        fail(exc)


def duration_ms(text: str, option: str) -> int:
    """A duration the CLI itself needs as a number (a wait's timeout, a purge's age)."""
    from schedd.units import parse_duration

    try:
        return parse_duration(text)
    except ScheddError as exc:
        invalid(f"{option}: {exc}")
