"""Command-line flags → the tables ``schedules.add`` and ``submit`` take.

A schedule added with ``schedctl schedules add`` is the same thing as a ``[schedules.NAME]``
table in ``schedd.toml``, so the flags build exactly that table: the same keys, and values as
the user typed them (``--timeout 10m`` becomes ``timeout = "10m"``). The daemon validates it
with the config's own rules and names a bad value ``spec.<key>``; schedctl never re-implements
those rules, so the two cannot drift apart.

What is checked here is only what the daemon cannot see: which flags were combined (a trigger
given twice, ``--cwd`` on a Python task) and text that must become JSON before it can be sent
(``--args``, ``--env``). Those errors name the flag, and nothing is sent.

``schedules add --file`` reads the same tables from a TOML file of ``[schedules.NAME]`` tables,
the config file's own shape, so a block can move between the two unchanged. Only what the
daemon cannot see is checked here too: that the file is TOML, holds nothing but schedule tables,
and that TOML date-times become the RFC 3339 text JSON can carry.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from schedd.errors import InvalidArgument

ArgvArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="-- ARGV",
        help="The command to run and its arguments, after `--`.",
        show_default=False,
    ),
]
PythonOpt = Annotated[
    str | None,
    typer.Option("--python", metavar="MODULE:FUNC", help="Run a Python callable instead."),
]
ArgsOpt = Annotated[
    str | None,
    typer.Option("--args", metavar="JSON", help="With --python: positional arguments (array)."),
]
KwargsOpt = Annotated[
    str | None,
    typer.Option("--kwargs", metavar="JSON", help="With --python: keyword arguments (object)."),
]
ShellOpt = Annotated[bool, typer.Option("--shell", help="Run the one ARGV string with /bin/sh -c.")]
CwdOpt = Annotated[
    str | None, typer.Option("--cwd", metavar="DIR", help="The command's working directory.")
]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option("--env", metavar="NAME=VALUE", help="Set a variable (repeatable)."),
]
TimeoutOpt = Annotated[
    str | None, typer.Option("--timeout", metavar="DUR", help="Kill a run after this (10m).")
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--retries", metavar="N", min=0, help="Retries after a failed first attempt (0: none)."
    ),
]
OverlapOpt = Annotated[
    str | None,
    typer.Option("--overlap", metavar="POLICY", help="skip, queue_one, allow or replace."),
]
TenantOpt = Annotated[
    str | None,
    typer.Option("--tenant", metavar="NAME", help="Charge retries to this [tenants.NAME]."),
]


def task_table(
    argv: list[str] | None,
    *,
    python: str | None = None,
    args: str | None = None,
    kwargs: str | None = None,
    shell: bool = False,
    cwd: str | None = None,
    env: list[str] | None = None,
    timeout: str | None = None,
    retries: int | None = None,
    overlap: str | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """The task keys of a schedule table (``submit``'s ``task``), from the task flags."""
    table: dict[str, Any]
    if argv and python is not None:
        raise InvalidArgument("give either a command after `--` or --python MODULE:FUNC, not both")
    if python is not None:
        _only_for("a command (after `--`)", cwd=cwd, env=env or None, shell=shell or None)
        table = {"python": python}
        if args is not None:
            table["args"] = _json(args, "--args", list, "an array, e.g. '[1, \"x\"]'")
        if kwargs is not None:
            table["kwargs"] = _json(kwargs, "--kwargs", dict, "an object, e.g. '{\"n\": 1}'")
    elif argv:
        _only_for("--python", args=args, kwargs=kwargs)
        table = {"command": _command(argv, shell)}
        if shell:
            table["shell"] = True
        if cwd is not None:
            table["cwd"] = cwd
        if env:
            table["env"] = _env(env)
    else:
        raise InvalidArgument(
            "missing the task: give the command after `--` (e.g. `-- /bin/echo hello`)"
            " or --python MODULE:FUNC"
        )
    optional = {"timeout": timeout, "overlap": overlap, "tenant": tenant}
    table.update({k: v for k, v in optional.items() if v is not None})
    if retries is not None:
        table["retry"] = {"max_attempts": retries + 1}
    return table


#: The task flags ``submit`` and ``schedules add`` share (their typer parameter names).
TASK_FLAGS = (
    "python",
    "args",
    "kwargs",
    "shell",
    "cwd",
    "env",
    "timeout",
    "retries",
    "overlap",
    "tenant",
)


def task_from(params: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`task_table` from a command's parsed parameters (``ctx.params``): both commands
    declare the same task flags, and this reads them in one place."""
    return task_table(params.get("argv"), **{name: params[name] for name in TASK_FLAGS})


def schedule_table(
    task: dict[str, Any],
    *,
    cron: str | None = None,
    every: str | None = None,
    at: str | None = None,
    timezone: str | None = None,
    jitter: str | None = None,
    misfire: str | None = None,
    lane: str | None = None,
) -> dict[str, Any]:
    """A ``[schedules.NAME]`` table: one trigger, its timing flags, and ``task``'s keys."""
    triggers = {k: v for k, v in {"cron": cron, "every": every, "at": at}.items() if v is not None}
    if len(triggers) != 1:
        given = ", ".join(f"--{k}" for k in triggers) or "none"
        raise InvalidArgument(f"give exactly one of --cron, --every, --at (given: {given})")
    optional = {"timezone": timezone, "jitter": jitter, "misfire": misfire, "lane": lane}
    return {**triggers, **{k: v for k, v in optional.items() if v is not None}, **task}


def file_tables(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[schedules.NAME]`` tables of ``path``, by name in file order, ready to send as JSON.

    InvalidArgument names the file and the entry (``FILE: schedules.NAME: ...``)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read it: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"{path}: not a TOML file: {exc}") from None
    other = sorted(set(doc) - {"schedules"})
    if other:
        raise InvalidArgument(
            f"{path}: only [schedules.NAME] tables belong in a --file; found {', '.join(other)}"
        )
    tables = doc.get("schedules", {})
    if not isinstance(tables, dict) or not tables:
        raise InvalidArgument(f"{path}: no [schedules.NAME] table in the file")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise InvalidArgument(
                f"{path}: schedules.{name}: expected a table, got {type(table).__name__}"
            )
    # TOML date-times (``at = 2027-01-01T09:00:00``) travel as the text the config would read.
    return {name: json.loads(json.dumps(t, default=_iso)) for name, t in tables.items()}


def _iso(value: object) -> str:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a TOML value")


def _only_for(kind: str, **flags: object) -> None:
    for name, value in flags.items():
        if value is not None:
            raise InvalidArgument(f"--{name} works only with {kind}")


def _command(argv: list[str], shell: bool) -> str | list[str]:
    if not shell:
        return argv
    if len(argv) != 1:
        raise InvalidArgument(
            f"--shell takes one string after `--`, the script for /bin/sh -c (got {len(argv)});"
            " quote it: -- 'echo a; echo b'"
        )
    return argv[0]


def _env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"--env: expected NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def _json(text: str, flag: str, kind: type, example: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{flag}: not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, kind):
        raise InvalidArgument(f"{flag}: expected {example}, got {text!r}")
    return value
