"""``schedd``: run the daemon, or check a config file.

Exit codes: 0 success; 1 the config is invalid (``check-config``) or the daemon failed; 7 the
store is locked by another daemon or otherwise unavailable.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from schedd import __version__
from schedd.cli import exitcodes
from schedd.errors import ConfigError, ScheddError

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    help="schedd: a durable job scheduler daemon.",
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Path to schedd.toml.", dir_okay=False)
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"schedd {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """schedd: a durable job scheduler daemon."""


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="The config file to validate.", dir_okay=False)],
) -> None:
    """Validate a config file and print every problem with its dotted key (exit 0 valid, 1 not)."""
    from schedd.config import load_config

    try:
        config = load_config(file)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{file}: ok ({len(config.schedules)} schedule(s), sha256 {config.sha256[:12]})")


#: sysexits(3) EX_CONFIG: ``schedd run`` was given a config file that does not validate.
EX_CONFIG = 78


@app.command("run")
def run(config: ConfigOpt) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    from schedd import heap
    from schedd.clock import SystemClock
    from schedd.config import load_config
    from schedd.daemon import serve
    from schedd.logs import setup_logging

    heap.hold()  # until READY: collections while the config is parsed would double the time
    heap.return_large_blocks()
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        # EX_CONFIG: the unit's RestartPreventExitStatus= fails at once instead of restarting
        # five times into the same broken file.
        raise typer.Exit(EX_CONFIG) from None
    setup_logging(cfg.logging.level, cfg.logging.format)
    daemon = serve(cfg, SystemClock())
    del cfg  # the daemon keeps the config without its schedules once they are stored
    try:
        asyncio.run(daemon)
    except ScheddError as exc:
        typer.echo(f"schedd: {exc}", err=True)
        raise typer.Exit(exitcodes.for_error(exc)) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
