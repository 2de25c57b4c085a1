"""Converters: a raw TOML value and where it is → a typed value, or :class:`Invalid`.

Each converter checks one kind of value the same way wherever it appears, and says what it
expected and what it got. Arrays and tables report each bad element at its own key
(``command[1]``, ``env.FOO``) and then raise an empty :class:`Invalid`, so one mistake inside
a value is one line, not two. Where a rule exists elsewhere in schedd (durations and sizes in
:mod:`schedd.units`, zones in :mod:`schedd.triggers`, names in :mod:`schedd.keys`) the converter
calls it, so the config and the admin API refuse the same values with the same words.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import urllib.parse
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from schedd.admin.access import group_id, resolve_entry
from schedd.config.walk import At, Converter, Invalid, expected, show
from schedd.errors import InvalidArgument
from schedd.keys import validate_name
from schedd.ratelimit import Rate
from schedd.triggers import load_zone
from schedd.units import parse_duration, parse_rate, parse_size

# --- scalars ------------------------------------------------------------------------------------


def integer(minimum: int) -> Converter:
    def convert(value: object, at: At) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise expected(f"an integer >= {minimum}", value)
        return value

    return convert


def number(*, above: float, at_most: float | None = None) -> Converter:
    """A finite TOML integer or float in ``(above, at_most]``: a rate, a ratio."""
    bound = f"a number > {above:g}" + ("" if at_most is None else f" and <= {at_most:g}")

    def convert(value: object, at: At) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise expected(bound, value)
        x = float(value)
        if not math.isfinite(x) or x <= above or (at_most is not None and x > at_most):
            raise expected(bound, value)
        return x

    return convert


def boolean(value: object, at: At) -> bool:
    if not isinstance(value, bool):
        raise expected("true or false", value)
    return value


def duration(*, allow_zero: bool = False) -> Converter:
    def convert(value: object, at: At) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise expected('a duration like "30s"', value)
        try:
            return parse_duration(value, allow_zero=allow_zero)
        except InvalidArgument as e:
            raise Invalid(str(e)) from e

    return convert


def optional_timeout(value: object, at: At) -> int | None:
    """``"0s"`` means *no limit*, so one schedule can lift a ``[defaults]`` timeout."""
    return duration(allow_zero=True)(value, at) or None


def whole_seconds(value: object, at: At) -> int:
    """A duration of at least one second with no fraction: ``RLIMIT_CPU`` counts seconds."""
    ms: int = duration()(value, at)
    if ms % 1000 or ms < 1000:
        raise Invalid(
            f"must be whole seconds, at least 1s (the CPU limit counts seconds), got {show(value)}"
        )
    return ms // 1000


def size(minimum: int) -> Converter:
    def convert(value: object, at: At) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise expected('a size like "64KiB"', value)
        try:
            n = parse_size(value)
        except InvalidArgument as e:
            raise Invalid(str(e)) from e
        if n < minimum:
            raise Invalid(f"must be at least {minimum} bytes, got {show(value)}")
        return n

    return convert


def choice(*options: str) -> Converter:
    def convert(value: object, at: At) -> str:
        if value not in options:
            raise expected("one of " + ", ".join(f'"{o}"' for o in options), value)
        assert isinstance(value, str)
        return value

    return convert


_E = TypeVar("_E", bound=StrEnum)


def enum(cls: type[_E]) -> Converter:
    choose = choice(*(m.value for m in cls))
    return lambda value, at: cls(choose(value, at))


def text(value: object, at: At) -> str:
    """A non-empty string without NUL bytes (which no path, argv or env entry can carry)."""
    if not isinstance(value, str) or not value:
        raise expected("a non-empty string", value)
    if "\0" in value:
        raise Invalid("contains a NUL byte")
    return value


def socket_mode(value: object, at: At) -> int:
    # A TOML integer is refused: ``mode = 660`` is decimal 660, not rw-rw----.
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise expected('an octal permission string like "0660"', value)
    return int(value, 8)


def group(value: object, at: At) -> str:
    """A group that exists now: the socket is chowned to it at start, long after the check."""
    name = text(value, at)
    try:
        group_id(name)
    except InvalidArgument as e:
        raise Invalid(str(e)) from e
    return name


def listen_address(value: object, at: At) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:9464"`` for IPv6): where an HTTP endpoint listens."""
    textual = text(value, at)
    host, sep, port = textual.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise expected('"HOST:PORT", e.g. "127.0.0.1:9464"', value)
    return host, int(port)


def http_url(value: object, at: At) -> str:
    url = text(value, at)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise expected('an http(s) URL, e.g. "https://hc-ping.com/UUID"', value)
    return url


def zone(value: object, at: At) -> str:
    name = text(value, at)
    try:
        load_zone(name)
    except InvalidArgument as e:
        raise Invalid(f'{e} (an IANA name like "Europe/Berlin")') from e
    return name


def rate(value: object, at: At) -> Rate:
    if not isinstance(value, str):
        raise expected('a rate like "100/10m"', value)
    try:
        return parse_rate(value)
    except InvalidArgument as e:
        raise Invalid(str(e)) from e


def report_bad_name(name: str, what: str, at: At) -> None:
    """Schedule and tenant names follow the API's rule (DESIGN §1), with its message."""
    try:
        validate_name(name, what)
    except InvalidArgument as e:
        at.problem(str(e))


# --- paths --------------------------------------------------------------------------------------


def path(value: object, at: At) -> Path:
    """Relative to the config file's directory (see the package docstring)."""
    return at.ctx.base_dir / text(value, at)


def prom_file(value: object, at: At) -> Path:
    """node_exporter's textfile collector reads only ``*.prom`` files: any other name is a typo
    that would silently export nothing."""
    found = path(value, at)
    if found.suffix != ".prom":
        raise Invalid(f"{found} must end in .prom (node_exporter reads only *.prom files)")
    return found


def executable(value: object, at: At) -> str:
    """An interpreter that exists now: a wrong venv path should fail the file, not every run.

    The path is kept as written, symlinks and all: a virtualenv's ``bin/python`` is a symlink
    to the base interpreter, and only when started through the link does Python find the
    venv's ``pyvenv.cfg`` and its site-packages.
    """
    found = path(value, at)
    if not found.exists():
        raise Invalid(
            f"{found} does not exist; give the interpreter's absolute path (PATH is not "
            'searched), e.g. "/opt/app/venv/bin/python"'
        )
    if not found.is_file():
        raise Invalid(f"{found} is not a file")
    if not os.access(found, os.X_OK):
        raise Invalid(f"{found} is not executable")
    return str(found)


def _search_dir(item: object) -> str | None:
    why = _string(item)
    if why is None and not item:
        why = "expected a non-empty string"
    if why is None and ":" in str(item):
        why = f"{show(item)} contains ':', the separator of PYTHONPATH"
    return why


def directories(value: object, at: At) -> tuple[str, ...]:
    """``sys.path`` entries for the Python workers, resolved like any other path."""
    if not isinstance(value, list):
        raise expected("an array of directory paths", value)
    _each(value, at, _search_dir)
    return tuple(str(at.ctx.base_dir / item) for item in value)


# --- arrays and tables of strings ---------------------------------------------------------------


def _each(items: list[object], at: At, why_not: Callable[[object], str | None]) -> None:
    """Report every element ``why_not`` refuses, at its index; an empty Invalid if any."""
    ok = True
    for i, item in enumerate(items):
        why = why_not(item)
        if why:
            (at / i).problem(why)
            ok = False
    if not ok:
        raise Invalid()


def _string(item: object) -> str | None:
    if not isinstance(item, str):
        return f"expected a string, got {show(item)}"
    if "\0" in item:
        return "contains a NUL byte"
    return None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(name: object) -> str | None:
    """Why ``name`` cannot be an environment variable, or None if it can."""
    if not isinstance(name, str):
        return f"expected a string, got {show(name)}"
    if not _ENV_NAME.fullmatch(name):
        return f"invalid environment variable name {show(name)} (letters, digits, _)"
    return None


def env_names(value: object, at: At) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise expected("an array of environment variable names", value)
    _each(value, at, _env_name)
    return tuple(value)


def _env_entry(name: str, item: object) -> str | None:
    why = _env_name(name)
    if why is None and name.startswith("SCHEDD_"):
        why = "names starting with SCHEDD_ are reserved for the ones schedd sets"
    return why or _string(item)


def env(value: object, at: At) -> dict[str, str]:
    if not isinstance(value, dict):
        raise expected('a table of NAME = "value" strings', value)
    ok = True
    for name, item in value.items():
        why = _env_entry(name, item)
        if why:
            (at / name).problem(why)
            ok = False
    if not ok:
        raise Invalid()
    return value


def argv(value: object, at: At) -> tuple[str, ...]:
    """A program and its arguments: a non-empty array of strings, the first one non-empty."""
    if not isinstance(value, list) or not value:
        raise expected("a non-empty array of strings", value)
    _each(value, at, _string)
    if not value[0]:
        (at / 0).problem("the program name is empty")
        raise Invalid()
    return tuple(value)


def command(value: object, at: At) -> str | tuple[str, ...]:
    """An argv array, or one string for ``shell = true``; which one is checked by the caller."""
    if isinstance(value, str):
        return text(value, at)
    return argv(value, at)


def instant_value(value: object, at: At) -> str | dt.datetime:
    """An RFC 3339 string or a TOML date-time; read in the schedule's zone by the caller."""
    if isinstance(value, dt.datetime | str):
        return value
    raise expected('a date-time like 2027-01-01T09:00:00 or "2027-01-01T09:00:00+01:00"', value)


# --- admin roles --------------------------------------------------------------------------------


def _principal(item: object) -> str | None:
    if not isinstance(item, str):
        return f"expected a string, got {show(item)}"
    try:
        resolve_entry(item)
    except InvalidArgument as e:
        return str(e)
    return None


def principals(value: object, at: At) -> tuple[str, ...]:
    """``[admin] readers`` / ``operators``, each entry resolved on this host now.

    A name that does not resolve is an error rather than an entry that matches nobody: a typo
    in ``operators`` would otherwise lock the on-call engineer out, found only in an incident.
    """
    if not isinstance(value, list):
        raise expected('an array like ["alice", "uid:1001", "group:ops", "gid:50"]', value)
    _each(value, at, _principal)
    return tuple(value)


# --- Python tasks -------------------------------------------------------------------------------

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_TARGET = re.compile(f"{_DOTTED}:{_DOTTED}")


def python_target(value: object, at: At) -> str:
    if not isinstance(value, str) or not _TARGET.fullmatch(value):
        hint = ""
        if isinstance(value, str) and ":" not in value and "." in value:
            module, _, function = value.rpartition(".")
            hint = f'; separate the module from the function with ":", as in "{module}:{function}"'
        raise Invalid(
            'expected "package.module:function" (a module path, ":", a function), e.g. '
            f'"myapp.jobs:cleanup", got {show(value)}{hint}'
        )
    return value


def _json_ok(value: object, at: At) -> bool:
    """Report every value inside ``value`` that JSON cannot carry; True if there is none."""
    if isinstance(value, dict):
        return all([_json_ok(item, at / name) for name, item in value.items()])
    if isinstance(value, list):
        return all([_json_ok(item, at / i) for i, item in enumerate(value)])
    if isinstance(value, dt.date | dt.time):
        at.problem(
            f"{show(value)} is a TOML date/time, which JSON cannot carry; "
            f'write it as a string: "{value.isoformat()}"'
        )
        return False
    if isinstance(value, float) and not math.isfinite(value):
        at.problem(f"{show(value)} is not a finite number, which JSON cannot carry")
        return False
    return True


def json_array(value: object, at: At) -> tuple[object, ...]:
    if not isinstance(value, list):
        raise expected("an array of JSON values", value)
    if not _json_ok(value, at):
        raise Invalid()
    return tuple(value)


#: A function that declares ``context`` receives the firing's details there (model.PythonTask).
RESERVED_KWARG = "context"


def json_table(value: object, at: At) -> dict[str, object]:
    if not isinstance(value, dict):
        raise expected("a table of JSON values", value)
    ok = _json_ok(value, at)
    if RESERVED_KWARG in value:
        (at / RESERVED_KWARG).problem(
            "reserved: a function's context parameter receives the firing's details "
            "(idempotency key, scheduled time, attempt, schedule)"
        )
        ok = False
    if not ok:
        raise Invalid()
    return value
