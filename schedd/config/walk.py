"""The walk over a TOML document: where a value is, and where its problems go.

Converters never raise out of the walk. Each problem is appended, with its dotted key, to one
list shared by the whole walk (:class:`Ctx`), so one pass finds every mistake in a file. A
converter that refuses a value raises :class:`Invalid`; :func:`read` records the message at
the key and leaves the value out, so the dataclass default fills its place while the walk goes
on (the config is never returned once any problem was recorded).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass
class Ctx:
    base_dir: Path
    problems: list[tuple[str, str]] = field(default_factory=list)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class At:
    """A position in the document, by its dotted key, plus the walk's shared context.

    The dotted key is spelled out only when asked for (to report a problem): a walk makes a
    position for every key it reads and almost none of them report anything, so quoting and
    joining every key up front was most of the cost of reading a small table, such as each of
    the thousand entries of one ``schedules.add_many``.
    """

    __slots__ = ("_key", "_parent", "_sub", "ctx")

    def __init__(self, key: str, ctx: Ctx) -> None:
        self._key: str | None = key
        self._parent: At | None = None
        self._sub: str | int = ""
        self.ctx = ctx

    @property
    def key(self) -> str:
        if self._key is None:
            assert self._parent is not None  # only a root is made with its key
            self._key = _join(self._parent.key, self._sub)
        return self._key

    def __truediv__(self, sub: str | int) -> At:
        child = object.__new__(At)
        child._key, child._parent, child._sub, child.ctx = None, self, sub, self.ctx
        return child

    def __repr__(self) -> str:
        return f"At({self.key!r})"

    def problem(self, message: str) -> None:
        self.ctx.problems.append((self.key, message))

    def problem_count(self) -> int:
        """How many problems the whole walk has found so far (to tell whether a part added any)."""
        return len(self.ctx.problems)


def _join(key: str, sub: str | int) -> str:
    if isinstance(sub, int):
        return f"{key}[{sub}]"
    # Quote like TOML does, so ``schedules."db.backup".cron`` stays unambiguous.
    part = sub if _BARE_KEY.fullmatch(sub) else json.dumps(sub, ensure_ascii=False)
    return f"{key}.{part}" if key else part


class Invalid(Exception):
    """A converter refuses a value; with no message, it already reported finer-grained keys."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


def show(value: object) -> str:
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


def expected(what: str, value: object) -> Invalid:
    return Invalid(f"expected {what}, got {show(value)}")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f'; did you mean "{close[0]}"?'
    return f" (known: {', '.join(known)})"


Converter = Callable[[object, At], Any]


@dataclass(frozen=True)
class Key:
    """One TOML key: the dataclass field it fills and how its value is checked."""

    attr: str
    convert: Converter
    required: bool = False


Schema = Mapping[str, Key]


def as_table(value: object, at: At) -> dict[str, Any] | None:
    """``value`` if it is a TOML table; otherwise report it (and nothing inside it: None)."""
    if isinstance(value, dict):
        return value
    at.problem(f"expected a table, got {show(value)}")
    return None


def read(table: Mapping[str, object], schema: Schema, at: At) -> dict[str, Any]:
    """Convert every key of ``table`` by ``schema`` into ``{attr: value}``; report the rest."""
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = schema.get(name)
        if key is None:
            (at / name).problem("unknown key" + did_you_mean(name, schema))
            continue
        try:
            out[key.attr] = key.convert(value, at / name)
        except Invalid as e:
            if e.message:
                (at / name).problem(e.message)
    for name, key in schema.items():
        if key.required and name not in table:
            (at / name).problem("required key is missing")
    return out


_D = TypeVar("_D", bound="DataclassInstance")


@dataclass(frozen=True)
class Patch:
    """Some fields of a nested policy (``retry``, ``limits``), laid over an inherited value.

    This is what makes a schedule that sets only ``retry.max_attempts`` keep the ``base`` and
    ``max`` of ``[defaults.retry]``: tables merge field by field, not as a whole.
    """

    fields: Mapping[str, Any]

    def over(self, base: _D) -> _D:
        return dataclasses.replace(base, **self.fields)


def subtable(schema: Schema) -> Converter:
    """A nested table read by ``schema``; one with any problem is left out as a whole.

    Leaving it out whole keeps a refused ``base`` from being replaced by the inherited one and
    then compared with the ``max`` written next to it, which would report a second, misleading
    problem.
    """

    def convert(value: object, at: At) -> Patch:
        if not isinstance(value, dict):
            raise expected("a table", value)
        before = at.problem_count()
        fields = read(value, schema, at)
        if at.problem_count() > before:
            raise Invalid()
        return Patch(fields)

    return convert
