"""``schedd.toml``: read, validate strictly, and turn into frozen dataclasses.

The failure this module exists to prevent is the *silent fallback*: a typo such as
``misfire_gracee = "10m"`` that a lenient loader ignores, so the schedule quietly runs with the
default grace and the mistake surfaces months later as a skipped payment run. So:

* **Every key is known.** Each section is a small schema table (TOML key → dataclass field and
  converter); an unknown key or section is an error with a ``difflib`` "did you mean".
* **Every problem, in one pass.** Converters never raise out of the walk: each problem is
  recorded with its dotted key (``schedules.backup.cron``), and one :class:`ConfigError` carries
  them all, so an operator fixes a file once instead of once per mistake. A value that fails
  is left out, so the dataclass default fills its place, but a config with any problem is
  never returned.
* **The same rules as the API.** Names go through :func:`schedd.keys.validate_name`, triggers
  through :func:`schedd.triggers.make_trigger`, instants through
  :func:`schedd.keys.parse_instant`, so a schedule the config accepts is one the admin API
  would accept, with the same message under a config key.

Relative paths (``state_dir``, ``store.path``, ``admin.socket``, a schedule's ``cwd``) resolve
against the directory of the config file, not the daemon's working directory: systemd starts
schedd in ``/``, a developer starts it in a checkout, and the file should mean the same in both.

Adding a section is a schema table, a frozen dataclass, an entry in ``_SECTIONS`` and one line
in :func:`_build`. The reference for users is ``docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from schedd import model
from schedd.errors import ConfigError, InvalidArgument
from schedd.keys import parse_instant, validate_name
from schedd.triggers import Trigger, load_zone, make_trigger
from schedd.units import format_duration, parse_duration, parse_size

# --- the result -------------------------------------------------------------------------------

#: ``sockaddr_un.sun_path`` is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path
    shutdown_grace_ms: int = 30_000


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    synchronous: Literal["full", "normal"] = "full"
    busy_timeout_ms: int = 5_000
    #: How far ahead the loader arms the timing wheel; later occurrences stay in SQLite.
    horizon_ms: int = 60_000


@dataclass(frozen=True)
class AdminConfig:
    socket: Path
    mode: int = 0o660
    group: str | None = None
    max_request_bytes: int = 1024 * 1024
    idle_timeout_ms: int = 300_000
    max_connections: int = 64


@dataclass(frozen=True)
class WorkersConfig:
    max: int = 4
    output_tail_bytes: int = 64 * 1024
    env_allow: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME")


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Defaults:
    policies: model.Policies = field(default_factory=model.Policies)
    jitter_ms: int | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class Config:
    path: Path | None
    #: Hex SHA-256 of the file's bytes, shown by ``status`` so operators can tell which
    #: version of the file the daemon is running.
    sha256: str
    daemon: DaemonConfig
    store: StoreConfig
    admin: AdminConfig
    workers: WorkersConfig
    logging: LoggingConfig
    defaults: Defaults
    schedules: tuple[model.ScheduleSpec, ...]


def load_config(path: Path) -> Config:
    """Read and validate ``path``; relative paths inside resolve against its directory.

    Raises :class:`ConfigError` (``source`` = the file name) listing every problem found.
    """
    path = path.absolute()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError([("", f"cannot read the config file: {e.strerror}")], str(path)) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([("", f"not valid UTF-8 (byte {e.start})")], str(path)) from e
    config = parse_config(text, source=str(path), base_dir=path.parent)
    return dataclasses.replace(config, path=path)


def parse_config(text: str, *, source: str = "<string>", base_dir: Path) -> Config:
    """Validate TOML ``text`` as if it were a file in ``base_dir``; ``Config.path`` is None."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("", f"invalid TOML: {e}")], source) from e
    ctx = _Ctx(base_dir.absolute())
    config = _build(doc, _At("", ctx), hashlib.sha256(text.encode("utf-8")).hexdigest())
    if ctx.problems:
        raise ConfigError(ctx.problems, source)
    return config


def config_socket_path(path: Path) -> Path:
    """The admin socket a daemon started with ``path`` listens on (for ``schedctl --config``).

    The whole file is validated: a client reading a broken config would otherwise guess a
    socket the daemon, refusing the same file, never opened.
    """
    return load_config(path).admin.socket


# --- the walk: where a value is, and where its problems go --------------------------------------


@dataclass
class _Ctx:
    base_dir: Path
    problems: list[tuple[str, str]] = field(default_factory=list)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class _At:
    """A position in the document, by its dotted key, plus the walk's shared context."""

    key: str
    ctx: _Ctx

    def __truediv__(self, sub: str | int) -> _At:
        if isinstance(sub, int):
            return _At(f"{self.key}[{sub}]", self.ctx)
        # Quote like TOML does, so ``schedules."db.backup".cron`` stays unambiguous.
        part = sub if _BARE_KEY.fullmatch(sub) else json.dumps(sub, ensure_ascii=False)
        return _At(f"{self.key}.{part}" if self.key else part, self.ctx)

    def problem(self, message: str) -> None:
        self.ctx.problems.append((self.key, message))


class _Invalid(Exception):
    """A converter refuses a value; with no message, it already reported finer-grained keys."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


def _show(value: object) -> str:
    """A value as it looks in TOML, for ``got ...`` in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return repr(value)


def _expected(what: str, value: object) -> _Invalid:
    return _Invalid(f"expected {what}, got {_show(value)}")


def _did_you_mean(word: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f'; did you mean "{close[0]}"?'
    return f" (known: {', '.join(known)})"


# --- converters: raw TOML value (and where it is) -> typed value, or _Invalid -------------------

Converter = Callable[[object, _At], Any]


def _integer(minimum: int) -> Converter:
    def convert(value: object, at: _At) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _expected(f"an integer >= {minimum}", value)
        return value

    return convert


def _boolean(value: object, at: _At) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _duration(*, allow_zero: bool = False) -> Converter:
    def convert(value: object, at: _At) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _expected('a duration like "30s"', value)
        try:
            return parse_duration(value, allow_zero=allow_zero)
        except InvalidArgument as e:
            raise _Invalid(str(e)) from e

    return convert


def _optional_timeout(value: object, at: _At) -> int | None:
    """``"0s"`` means *no limit*, so one schedule can lift a ``[defaults]`` timeout."""
    return _duration(allow_zero=True)(value, at) or None


def _size(minimum: int) -> Converter:
    def convert(value: object, at: _At) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _expected('a size like "64KiB"', value)
        try:
            n = parse_size(value)
        except InvalidArgument as e:
            raise _Invalid(str(e)) from e
        if n < minimum:
            raise _Invalid(f"must be at least {minimum} bytes, got {_show(value)}")
        return n

    return convert


def _choice(*options: str) -> Converter:
    def convert(value: object, at: _At) -> str:
        if value not in options:
            raise _expected("one of " + ", ".join(json.dumps(o) for o in options), value)
        assert isinstance(value, str)
        return value

    return convert


_E = TypeVar("_E", bound=StrEnum)


def _enum(cls: type[_E], *, only: tuple[str, ...] | None = None) -> Converter:
    choose = _choice(*(only if only is not None else (m.value for m in cls)))
    return lambda value, at: cls(choose(value, at))


def _text(value: object, at: _At) -> str:
    """A non-empty string without NUL bytes (which no path, argv or env entry can carry)."""
    if not isinstance(value, str) or not value:
        raise _expected("a non-empty string", value)
    if "\0" in value:
        raise _Invalid("contains a NUL byte")
    return value


def _path(value: object, at: _At) -> Path:
    return at.ctx.base_dir / _text(value, at)


def _socket_mode(value: object, at: _At) -> int:
    # A TOML integer is refused: ``mode = 660`` is decimal 660, not rw-rw----.
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise _expected('an octal permission string like "0660"', value)
    return int(value, 8)


def _zone(value: object, at: _At) -> str:
    name = _text(value, at)
    try:
        load_zone(name)
    except InvalidArgument as e:
        raise _Invalid(f'{e} (an IANA name like "Europe/Berlin")') from e
    return name


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(name: str) -> str | None:
    """Why ``name`` cannot be an environment variable, or None if it can."""
    if not _ENV_NAME.fullmatch(name):
        return f"invalid environment variable name {_show(name)} (letters, digits, _)"
    return None


def _env_names(value: object, at: _At) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _expected("an array of environment variable names", value)
    ok = True
    for i, item in enumerate(value):
        why = _env_name(item) if isinstance(item, str) else f"expected a string, got {_show(item)}"
        if why:
            (at / i).problem(why)
            ok = False
    if not ok:
        raise _Invalid()
    return tuple(value)


def _env(value: object, at: _At) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _expected('a table of NAME = "value" strings', value)
    ok = True
    for name, item in value.items():
        why = _env_name(name)
        if why is None and name.startswith("SCHEDD_"):
            why = "names starting with SCHEDD_ are reserved for the ones schedd sets"
        if why is None and not isinstance(item, str):
            why = f"expected a string, got {_show(item)}"
        if why is None and "\0" in item:
            why = "contains a NUL byte"
        if why:
            (at / name).problem(why)
            ok = False
    if not ok:
        raise _Invalid()
    return value


def _command(value: object, at: _At) -> str | tuple[str, ...]:
    """An argv array, or one string for ``shell = true``; which one is checked by the caller."""
    if isinstance(value, str):
        return _text(value, at)
    if not isinstance(value, list) or not value:
        raise _expected("a non-empty array of strings", value)
    ok = True
    for i, item in enumerate(value):
        if not isinstance(item, str):
            (at / i).problem(f"expected a string, got {_show(item)}")
            ok = False
        elif "\0" in item:
            (at / i).problem("contains a NUL byte")
            ok = False
    if ok and not value[0]:
        (at / 0).problem("the program name is empty")
        ok = False
    if not ok:
        raise _Invalid()
    return tuple(value)


def _instant_value(value: object, at: _At) -> str | dt.datetime:
    """An RFC 3339 string or a TOML date-time; read in the schedule's zone by the caller."""
    if isinstance(value, dt.datetime | str):
        return value
    raise _expected('a date-time like 2027-01-01T09:00:00 or "2027-01-01T09:00:00+01:00"', value)


# --- schemas: one small table per section ------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One TOML key: the dataclass field it fills and how its value is checked."""

    attr: str
    convert: Converter
    required: bool = False


Schema = Mapping[str, Key]

_DAEMON: Schema = {
    "state_dir": Key("state_dir", _path, required=True),
    "shutdown_grace": Key("shutdown_grace_ms", _duration()),
}
_STORE: Schema = {
    "path": Key("path", _path),
    "synchronous": Key("synchronous", _choice("full", "normal")),
    "busy_timeout": Key("busy_timeout_ms", _duration()),
    "horizon": Key("horizon_ms", _duration()),
}
_ADMIN: Schema = {
    "socket": Key("socket", _path),
    "mode": Key("mode", _socket_mode),
    "group": Key("group", _text),
    "max_request_size": Key("max_request_bytes", _size(1024)),
    "idle_timeout": Key("idle_timeout_ms", _duration()),
    "max_connections": Key("max_connections", _integer(1)),
}
_WORKERS: Schema = {
    "max": Key("max", _integer(1)),
    "output_tail": Key("output_tail_bytes", _size(1)),
    "env_allow": Key("env_allow", _env_names),
}
_LOGGING: Schema = {
    "level": Key("level", _choice("debug", "info", "warning", "error")),
}
#: Shared by ``[defaults]`` and ``[schedules.NAME]``; attrs are ``model.Policies`` fields.
_POLICIES: Schema = {
    "misfire": Key("misfire", _enum(model.Misfire)),
    "misfire_grace": Key("misfire_grace_ms", _duration()),
    "max_catchup": Key("max_catchup", _integer(1)),
    # queue_one and replace need the runner to hold or preempt runs per schedule; until it
    # does, the config refuses them rather than silently behaving like "allow".
    "overlap": Key("overlap", _enum(model.Overlap, only=("skip", "allow"))),
    "timeout": Key("timeout_ms", _optional_timeout),
    "kill_grace": Key("kill_grace_ms", _duration()),
}
_TIMING: Schema = {
    "jitter": Key("jitter_ms", _duration(allow_zero=True)),
    "timezone": Key("timezone", _zone),
}
_DEFAULTS: Schema = {**_POLICIES, **_TIMING}
_TRIGGER_KEYS = ("cron", "every", "at")
_SCHEDULE: Schema = {
    **_POLICIES,
    **_TIMING,
    "cron": Key("cron", _text),
    "every": Key("every_ms", _duration()),
    "at": Key("at", _instant_value),
    # The task. ``python = "package.module:function"`` joins ``command`` here with the Python
    # worker pool, and _task() then requires exactly one of the two.
    "command": Key("command", _command),
    "shell": Key("shell", _boolean),
    "cwd": Key("cwd", _path),
    "env": Key("env", _env),
}
_SECTIONS: Mapping[str, Schema] = {
    "daemon": _DAEMON,
    "store": _STORE,
    "admin": _ADMIN,
    "workers": _WORKERS,
    "logging": _LOGGING,
    "defaults": _DEFAULTS,
    "schedules": {},  # a table of [schedules.NAME] tables, each checked against _SCHEDULE
}


def _table(value: object, at: _At) -> dict[str, Any] | None:
    """``value`` if it is a TOML table; otherwise report it (and nothing inside it: None)."""
    if isinstance(value, dict):
        return value
    at.problem(f"expected a table, got {_show(value)}")
    return None


def _read(table: Mapping[str, object], schema: Schema, at: _At) -> dict[str, Any]:
    """Convert every key of ``table`` by ``schema`` into ``{attr: value}``; report the rest."""
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = schema.get(name)
        if key is None:
            (at / name).problem("unknown key" + _did_you_mean(name, schema))
            continue
        try:
            out[key.attr] = key.convert(value, at / name)
        except _Invalid as e:
            if e.message:
                (at / name).problem(e.message)
    for name, key in schema.items():
        if key.required and name not in table:
            (at / name).problem("required key is missing")
    return out


# --- assembling the sections --------------------------------------------------------------------


def _build(doc: Mapping[str, object], root: _At, sha256: str) -> Config:
    for name, value in doc.items():
        if name not in _SECTIONS:
            # Offer "daemon.state_dir" too: a key above the first [header] is a common slip.
            known = [*_SECTIONS, *(f"{s}.{k}" for s, schema in _SECTIONS.items() for k in schema)]
            what = "unknown section" if isinstance(value, dict) else "unknown key"
            (root / name).problem(what + _did_you_mean(name, known))
    sections = {name: _table(doc.get(name, {}), root / name) for name in _SECTIONS}

    def read(name: str) -> dict[str, Any]:
        table = sections[name]
        return {} if table is None else _read(table, _SECTIONS[name], root / name)

    daemon_values = read("daemon")
    state_dir_ok = "state_dir" in daemon_values
    # A missing or invalid state_dir is already reported; the stand-in only lets the walk go on.
    state_dir: Path = daemon_values.setdefault("state_dir", root.ctx.base_dir)
    daemon = DaemonConfig(**daemon_values)
    store = StoreConfig(**{"path": state_dir / "schedd.db", **read("store")})
    admin_values = read("admin")
    admin = AdminConfig(**{"socket": state_dir / "schedd.sock", **admin_values})
    socket_bytes = len(bytes(admin.socket))
    if socket_bytes > MAX_SOCKET_PATH_BYTES and ("socket" in admin_values or state_dir_ok):
        (root / "admin" / "socket").problem(
            f"{admin.socket} is {socket_bytes} bytes, over the {MAX_SOCKET_PATH_BYTES}-byte "
            "limit for Unix socket paths; set admin.socket to a shorter path"
        )
    workers = WorkersConfig(**read("workers"))
    logging = LoggingConfig(**read("logging"))
    defaults = _defaults(read("defaults"))
    schedules: list[model.ScheduleSpec] = []
    schedules_at = root / "schedules"
    for name, value in (sections["schedules"] or {}).items():
        table = _table(value, schedules_at / name)
        spec = None if table is None else _schedule(name, table, defaults, schedules_at)
        if spec is not None:
            schedules.append(spec)
    return Config(
        path=None,
        sha256=sha256,
        daemon=daemon,
        store=store,
        admin=admin,
        workers=workers,
        logging=logging,
        defaults=defaults,
        schedules=tuple(schedules),
    )


def _split_policies(values: dict[str, Any]) -> dict[str, Any]:
    """Remove and return the ``model.Policies`` fields among ``values``."""
    return {k.attr: values.pop(k.attr) for k in _POLICIES.values() if k.attr in values}


def _defaults(values: dict[str, Any]) -> Defaults:
    policies = dataclasses.replace(model.Policies(), **_split_policies(values))
    return Defaults(policies=policies, **values)


def _schedule(
    name: str, table: Mapping[str, object], defaults: Defaults, parent: _At
) -> model.ScheduleSpec | None:
    """One ``[schedules.NAME]`` table, with ``[defaults]`` filled in; None if it has problems."""
    at = parent / name
    before = len(at.ctx.problems)
    try:
        validate_name(name, "schedule name")
    except InvalidArgument as e:
        at.problem(str(e))
    values = _read(table, _SCHEDULE, at)
    policies = dataclasses.replace(defaults.policies, **_split_policies(values))
    timezone_ok = "timezone" in values or "timezone" not in table
    timezone: str = values.get("timezone", defaults.timezone)
    trigger = _trigger(values, table, timezone, at) if timezone_ok else None
    task = _task(values, table, at)
    jitter_ms: int | None = values.get("jitter_ms", defaults.jitter_ms)
    if trigger is not None and jitter_ms:
        _check_jitter(jitter_ms, trigger, table, at)
    if trigger is None or task is None or len(at.ctx.problems) > before:
        return None
    return model.ScheduleSpec(
        name=name,
        trigger=trigger[0],
        task=task,
        policies=policies,
        jitter_ms=jitter_ms,
        source=model.Source.CONFIG,
    )


def _trigger(
    values: Mapping[str, Any], table: Mapping[str, object], timezone: str, at: _At
) -> tuple[model.TriggerSpec, Trigger] | None:
    present = [k for k in _TRIGGER_KEYS if k in table]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        at.problem(f"set exactly one of cron, every, at (found {found})")
        return None
    kind = present[0]
    if _SCHEDULE[kind].attr not in values:
        return None  # its value was refused and reported
    spec: model.TriggerSpec
    try:
        if kind == "cron":
            spec = model.CronSpec(values["cron"], timezone)
        elif kind == "every":
            spec = model.IntervalSpec(values["every_ms"])
        else:
            at_value = values["at"]
            text = at_value if isinstance(at_value, str) else at_value.isoformat()
            spec = model.OnceSpec(parse_instant(text, timezone))
        return spec, make_trigger(spec)
    except InvalidArgument as e:
        (at / kind).problem(str(e))
        return None


def _check_jitter(
    jitter_ms: int, trigger: tuple[model.TriggerSpec, Trigger], table: Mapping[str, object], at: _At
) -> None:
    """A jitter bound longer than the period would push a firing past the next occurrence."""
    period_ms = trigger[1].period_hint_ms()
    if period_ms is None or jitter_ms <= period_ms:
        return
    own = "jitter" in table
    kind = next(k for k in _TRIGGER_KEYS if k in table)
    (at / ("jitter" if own else kind)).problem(
        f"jitter {format_duration(jitter_ms)} is longer than the period "
        f"{format_duration(period_ms)}" + ("" if own else " (jitter from defaults.jitter)")
    )


def _task(values: Mapping[str, Any], table: Mapping[str, object], at: _At) -> model.TaskSpec | None:
    if "command" not in table:
        at.problem('missing command (the argv to run, e.g. ["/bin/echo", "hello"])')
        return None
    if "command" not in values or ("shell" in table and "shell" not in values):
        return None  # refused and reported
    command: str | tuple[str, ...] = values["command"]
    shell: bool = values.get("shell", False)
    if shell and not isinstance(command, str):
        (at / "command").problem("with shell = true, command is one string for /bin/sh -c")
        return None
    if not shell and isinstance(command, str):
        (at / "command").problem(
            f"expected a non-empty array of strings, got {_show(command)}; "
            "to run a string through /bin/sh, set shell = true"
        )
        return None
    return model.CommandTask(
        argv=(command,) if isinstance(command, str) else command,
        cwd=str(values["cwd"]) if "cwd" in values else None,
        env=values.get("env", {}),
        shell=shell,
    )
