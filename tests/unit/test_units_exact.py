"""Durations and sizes are read with integers, and a plain ``"90000s"`` in one step.

Both must accept and refuse exactly what the reading through :class:`fractions.Fraction` did,
with the same values and the same messages. :func:`fraction_reading` below is that reading,
kept as the oracle; every input is compared with it, through whichever path it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from schedd import units
from schedd.errors import InvalidArgument
from schedd.units import parse_duration, parse_size

UNITS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
SIZES = {"B": 1, "kB": 1000, "KiB": 1024, "MiB": 1024**2}

Outcome = tuple[str, object]


def outcome(read: object, *args: object, **kwargs: object) -> Outcome:
    """``("ok", value)`` or ``(exception type, message)``: what a reading did with an input."""
    assert callable(read)
    try:
        return "ok", read(*args, **kwargs)
    except (InvalidArgument, ValueError) as e:
        return type(e).__name__, str(e)


def fraction_reading(value: str, allow_zero: bool) -> int:
    """The duration parser as it was, term by term through Fraction (the oracle)."""

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f'invalid duration "{value}": {why}')

    if not value:
        raise bad(f'empty; write a number and a unit ({", ".join(UNITS)}), e.g. "30s"')
    if value.startswith("-"):
        raise bad("must not be negative")
    total, pos, last_rank = Fraction(0), 0, -1
    while pos < len(value):
        m = units._TERM.match(value, pos)
        if m is None:
            raise bad(f'expected a number at "{value[pos:]}", e.g. "1h30m"')
        number, unit = m.groups()
        if not unit:
            raise bad(f'missing unit after {number}; write e.g. "{number}s" or "{number}ms"')
        if unit not in UNITS:
            raise bad(f'unknown unit "{unit}" (use {", ".join(UNITS)})')
        rank = list(UNITS).index(unit)
        if rank <= last_rank:
            raise bad('units must go from largest to smallest, each once, e.g. "1h30m"')
        last_rank = rank
        total += Fraction(number) * UNITS[unit]
        pos = m.end()
    if total.denominator != 1:
        raise bad("finer than a millisecond")
    if total == 0 and not allow_zero:
        raise bad("must be greater than zero")
    return int(total)


TRICKY = [
    "1.5s",
    "90m",
    "1h30m",
    "0s",
    "0ms",
    "0.0s",
    "-5s",
    "-0s",
    "5",
    "s",
    ".5s",
    "5.s",
    "1..5s",
    "0.001s",
    "0.0001s",
    "0.0005s0.5ms",  # two fractions of a millisecond that add up to a whole one
    "1.5ms",
    "1d2h3m4s5ms",
    "1h1h",
    "30m1h",
    "1h 30m",
    " 1h",
    "1h ",
    "1H",
    "1hr",
    "99999999999999999999999999d",
    "\u0661s",  # ARABIC-INDIC DIGIT ONE: \d and int() take any Unicode decimal digit
    "\u0661.\u0665s",
    "\uff15m",  # FULLWIDTH DIGIT FIVE
    "\u00b2s",  # a superscript is a digit to isdigit() but not a decimal one
    "1_000s",
    "1e3s",
    "0x10s",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("allow_zero", [False, True])
def test_durations_read_as_the_fraction_reading_did(text: str, allow_zero: bool) -> None:
    assert outcome(parse_duration, text, allow_zero=allow_zero) == outcome(
        fraction_reading, text, allow_zero
    )


@given(
    st.text(alphabet="0123456789.-dhms x\u0661\uff15", max_size=14),
    st.booleans(),
)
@example("1h30m", False)
def test_any_text_reads_as_the_fraction_reading_did(text: str, allow_zero: bool) -> None:
    assert outcome(parse_duration, text, allow_zero=allow_zero) == outcome(
        fraction_reading, text, allow_zero
    )


@pytest.mark.parametrize(
    "text", ["90000s", "0s", "250ms", "5m", "2d", "007h", "\u0661\u0662s", "99999999999999999999d"]
)
def test_a_plain_duration_reads_the_same_by_the_general_path(text: str) -> None:
    assert units._PLAIN.fullmatch(text), "this input takes the one-step path"
    general = units._sum_terms(text, InvalidArgument)
    assert parse_duration(text, allow_zero=True) == general


@given(st.integers(min_value=0, max_value=10**30), st.sampled_from(list(UNITS)))
def test_every_plain_duration_reads_the_same_by_both_paths(count: int, unit: str) -> None:
    text = f"{count}{unit}"
    assert parse_duration(text, allow_zero=True) == units._sum_terms(text, InvalidArgument)


def fraction_size(value: str) -> int:
    """The size parser's arithmetic as it was (the oracle), for a value of a known unit."""
    m = units._TERM.fullmatch(value)
    assert m is not None
    total = Fraction(m[1]) * SIZES[m[2]]
    if total.denominator != 1:
        raise InvalidArgument(f'invalid size "{value}": not a whole number of bytes')
    return int(total)


@given(
    st.from_regex(r"\A[0-9]{1,6}(\.[0-9]{1,6})?\Z"),
    st.sampled_from(list(SIZES)),
)
@example("0.5", "KiB")
@example("0.3", "B")
@example("\u0661.\u0665", "KiB")
def test_sizes_read_as_the_fraction_reading_did(number: str, unit: str) -> None:
    text = number + unit
    assert outcome(parse_size, text) == outcome(fraction_size, text)


@pytest.mark.parametrize("read", [parse_duration, parse_size])
@pytest.mark.parametrize("text", ["9" * 4301 + "s", "1." + "5" * 4301 + "s", "1" * 101 + "s"])
def test_an_overlong_value_is_refused_by_name_not_by_int(
    read: Callable[[str], int], text: str
) -> None:
    """Past ``int()``'s digit limit the old reading raised a bare ValueError."""
    with pytest.raises(InvalidArgument, match=r'"[0-9.]{20}\.\.\.": longer than 100 characters'):
        read(text)
