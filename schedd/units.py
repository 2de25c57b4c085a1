"""Durations and sizes as operators write them: ``"1h30m"``, ``"250ms"``, ``"64KiB"``.

Inside schedd every duration is an integer number of milliseconds and every size an integer
number of bytes (no float compares, STYLE.md §1). This module is the one border crossing between
those integers and the strings in ``schedd.toml`` and on the ``schedctl`` command line.

Two choices make typos loud instead of silent:

* **A duration always carries its unit.** ``timeout = 30`` could be seconds or milliseconds, and
  guessing wrong is off by a factor of a thousand, so a bare number is refused with a message
  that says to write ``"30s"``. Sizes are different: a plain integer has one obvious unit (bytes).
* **Units go from largest to smallest, each at most once** (``"1h30m"``, not ``"30m1h"`` or
  ``"1m1m"``): anything else is more likely a slip than an intention.

Fractions are allowed where they land on a whole millisecond or byte (``"1.5s"``,
``"0.5KiB"``) and parsed exactly, as an integer over a power of ten, never through a float.
``format_duration``/``format_size`` are the display inverses; ``parse_duration`` reads back
whatever ``format_duration`` writes.

A *rate* (a tenant's ``retry_budget``) is a whole count over a duration, ``"100/10m"``; the
duration follows the rules above, and a unit alone means one of it (``"100/h"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from schedd.errors import InvalidArgument
from schedd.ratelimit import Rate

#: Largest first: the parser enforces this order, the formatter emits it.
_DURATION_UNITS: dict[str, int] = {
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}
_UNIT_LIST = ", ".join(_DURATION_UNITS)

_SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
#: The binary units, largest first, are what ``format_size`` writes.
_SIZE_DISPLAY = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))

#: One ``<number><unit>`` term; the unit is matched loosely so a wrong one can be named.
_TERM = re.compile(r"(\d+(?:\.\d+)?)([^\d.]*)")
#: A duration of one whole term, ``"90000s"``: by far the most common form, read in one step.
_PLAIN = re.compile(r"(\d+)(ms|[dhms])")
#: Longest duration or size text read: far beyond any real one, and short enough that the digit
#: strings in it stay within ``int()``'s limit (a 5 000-digit number raised a bare ValueError,
#: an internal error to an admin client rather than a message naming the value).
MAX_TEXT = 100
#: Each unit's place in the largest-first order.
_RANK = {unit: rank for rank, unit in enumerate(_DURATION_UNITS)}


def _exact(number: str) -> tuple[int, int]:
    """A matched ``<digits>[.<digits>]`` as ``(numerator, 10**decimals)``: ``"1.25"`` → (125, 100).

    Digits are read by ``int``, so any Unicode decimal digit counts, as ``\\d`` matched it.
    """
    whole, _, decimals = number.partition(".")
    scale = 10 ** len(decimals)
    return int(whole) * scale + (int(decimals) if decimals else 0), scale


def parse_duration(value: str | int, *, allow_zero: bool = False) -> int:
    """``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``, ``"1h30m"``, ``"1.5s"`` → ms.

    Raises :class:`InvalidArgument` quoting the value for a bare integer (ambiguous unit), a
    negative, zero (unless ``allow_zero``), a fraction of a millisecond, or anything unparsable.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        raise InvalidArgument(
            f'ambiguous duration {value}: a bare number has no unit; write "{value}s" '
            f'(or "{value}ms", "{value}m")'
        )
    if not isinstance(value, str):
        raise InvalidArgument(f'expected a duration like "30s", got {value!r}')

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f'invalid duration "{_clipped(value)}": {why}')

    if len(value) > MAX_TEXT:
        raise bad(f"longer than {MAX_TEXT} characters")
    if not value:
        raise bad(f'empty; write a number and a unit ({_UNIT_LIST}), e.g. "30s"')
    if value.startswith("-"):
        raise bad("must not be negative")
    plain = _PLAIN.fullmatch(value)
    total = int(plain[1]) * _DURATION_UNITS[plain[2]] if plain else _sum_terms(value, bad)
    if total == 0 and not allow_zero:
        raise bad("must be greater than zero")
    return total


def _sum_terms(value: str, bad: Callable[[str], InvalidArgument]) -> int:
    """The general form, ``"1h30m"``, ``"1.5s"``: every term checked, summed exactly in ms."""
    # The total so far is numerator / scale ms, scale the largest power of ten seen yet.
    numerator, scale = 0, 1
    pos = 0
    last_rank = -1
    while pos < len(value):
        m = _TERM.match(value, pos)
        if m is None:
            raise bad(f'expected a number at "{value[pos:]}", e.g. "1h30m"')
        number, unit = m.groups()
        if not unit:
            raise bad(f'missing unit after {number}; write e.g. "{number}s" or "{number}ms"')
        if unit not in _DURATION_UNITS:
            raise bad(f'unknown unit "{unit}" (use {_UNIT_LIST})')
        rank = _RANK[unit]
        if rank <= last_rank:
            raise bad('units must go from largest to smallest, each once, e.g. "1h30m"')
        last_rank = rank
        term, term_scale = _exact(number)
        if term_scale > scale:
            numerator, scale = numerator * (term_scale // scale), term_scale
        numerator += term * _DURATION_UNITS[unit] * (scale // term_scale)
        pos = m.end()
    total, rest = divmod(numerator, scale)
    if rest:
        raise bad("finer than a millisecond")
    return total


def format_duration(ms: int) -> str:
    """The shortest exact form, largest unit first: ``90000`` → ``"1m30s"``, ``0`` → ``"0s"``.

    Negative values (a lag that turned into a lead) get a leading ``-``.
    """
    if ms < 0:
        return "-" + format_duration(-ms)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _DURATION_UNITS.items():
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(value: str | int) -> int:
    """``"512B"``, ``"64KiB"``, ``"1MiB"`` (binary), ``"10MB"``/``"10kB"`` (SI) → bytes.

    A plain integer is a byte count. Raises :class:`InvalidArgument` quoting the value for a
    negative, a fraction of a byte, a missing or unknown unit.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidArgument(f"invalid size {value}: must not be negative")
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f'expected a size like "64KiB", got {value!r}')

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f'invalid size "{_clipped(value)}": {why}')

    if len(value) > MAX_TEXT:
        raise bad(f"longer than {MAX_TEXT} characters")
    if value.startswith("-"):
        raise bad("must not be negative")
    m = _TERM.fullmatch(value)
    if m is None:
        raise bad('expected a number and a unit, e.g. "64KiB" or "10MB"')
    number, unit = m.groups()
    if not unit:
        raise bad(f'missing unit; write e.g. "{number}B" or "{number}KiB"')
    if unit not in _SIZE_UNITS:
        raise bad(f'unknown unit "{unit}" (use {", ".join(_SIZE_UNITS)})')
    numerator, scale = _exact(number)
    total, rest = divmod(numerator * _SIZE_UNITS[unit], scale)
    if rest:
        raise bad("not a whole number of bytes")
    return total


def format_size(n: int) -> str:
    """Binary units for display: ``65536`` → ``"64KiB"``; ``1536`` → ``"1.5KiB"``.

    Exact when ``n`` is a whole number of the unit, otherwise rounded to one decimal (it is for
    reading, not for writing back into a config).
    """
    for unit, size in _SIZE_DISPLAY:
        if n >= size:
            if n % size == 0:
                return f"{n // size}{unit}"
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def parse_rate(text: str) -> Rate:
    """``"100/10m"`` → ``Rate(100, 600_000)``: a whole count >= 1, ``/``, a duration > 0.

    Raises :class:`InvalidArgument` quoting the value and saying which half is wrong.
    """

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f'invalid rate "{text}": {why}')

    count, slash, period = text.partition("/")
    if not slash:
        raise bad('expected a rate like "100/10m" (a number of tokens per duration)')
    if not count.isascii() or not count.isdigit() or int(count) < 1:
        raise bad('the count before "/" must be a whole number >= 1, as in "100/10m"')
    if period in _DURATION_UNITS:
        period = "1" + period
    try:
        per_ms = parse_duration(period)
    except InvalidArgument as e:
        raise bad(str(e)) from e
    return Rate(int(count), per_ms)


def _clipped(value: str) -> str:
    return value if len(value) <= MAX_TEXT else value[:20] + "..."
