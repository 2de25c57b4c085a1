from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedd.errors import InvalidArgument
from schedd.ratelimit import Rate
from schedd.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
        ("1h30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
        ("1.5s", 1_500),
        ("0.25h", 900_000),
        ("0.001s", 1),
    ],
)
def test_parse_duration_reads_units_and_fractions_exactly(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


def test_bare_integer_duration_is_refused_with_a_hint_to_write_the_unit() -> None:
    with pytest.raises(InvalidArgument, match=r'ambiguous duration 30: .*write "30s"'):
        parse_duration(30)


def test_bool_is_not_taken_for_an_integer_duration() -> None:
    with pytest.raises(InvalidArgument, match="expected a duration"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("-5s", "negative"),
        ("30", 'missing unit after 30; write e.g. "30s"'),
        ("5x", 'unknown unit "x"'),
        ("1h 30m", 'unknown unit "h "'),
        ("abc", 'expected a number at "abc"'),
        ("30m1h", "largest to smallest"),
        ("1m1m", "largest to smallest"),
        ("1.5ms", "finer than a millisecond"),
        ("0s", "greater than zero"),
    ],
)
def test_bad_duration_names_the_value_and_the_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration(text)
    assert f'invalid duration "{text}"' in str(info.value)
    assert why in str(info.value)


def test_zero_duration_is_accepted_only_when_allowed() -> None:
    assert parse_duration("0s", allow_zero=True) == 0
    assert parse_duration("0ms", allow_zero=True) == 0


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0s"), (250, "250ms"), (1_500, "1s500ms"), (90_000, "1m30s"), (172_800_000, "2d")],
)
def test_format_duration_writes_the_shortest_exact_form(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_format_duration_marks_negative_values() -> None:
    assert format_duration(-90_000) == "-1m30s"


@given(st.integers(min_value=1, max_value=10**12))
def test_parse_duration_reads_back_format_duration(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


@pytest.mark.parametrize(
    ("value", "n"),
    [
        ("512B", 512),
        ("64KiB", 65_536),
        ("1MiB", 1_048_576),
        ("2GiB", 2 * 1024**3),
        ("10MB", 10_000_000),
        ("10kB", 10_000),
        ("1.5KiB", 1_536),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size_reads_binary_and_si_units_and_plain_bytes(value: str | int, n: int) -> None:
    assert parse_size(value) == n


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("64", "missing unit"),
        ("64K", 'unknown unit "K"'),
        ("64kib", 'unknown unit "kib"'),
        ("-1KiB", "negative"),
        ("0.3B", "whole number of bytes"),
        ("KiB", "expected a number and a unit"),
    ],
)
def test_bad_size_names_the_value_and_the_reason(value: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_size(value)
    assert f'invalid size "{value}"' in str(info.value)
    assert why in str(info.value)


def test_negative_integer_size_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="invalid size -1"):
        parse_size(-1)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0B"), (512, "512B"), (65_536, "64KiB"), (1_048_576, "1MiB"), (1_536, "1.5KiB")],
)
def test_format_size_uses_binary_units(n: int, text: str) -> None:
    assert format_size(n) == text


@given(st.integers(min_value=0, max_value=40), st.sampled_from(["B", "KiB", "MiB", "GiB"]))
def test_parse_size_reads_back_whole_unit_format_size(count: int, unit: str) -> None:
    n = parse_size(f"{count}{unit}")
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/10m", Rate(100, 600_000)),
        ("1/1s", Rate(1, 1_000)),
        ("5/1h30m", Rate(5, 5_400_000)),
        ("100/h", Rate(100, 3_600_000)),
        ("3/ms", Rate(3, 1)),
        ("007/1d", Rate(7, 86_400_000)),
    ],
)
def test_parse_rate_reads_a_count_per_duration(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("100", 'expected a rate like "100/10m" (a number of tokens per duration)'),
        ("", 'expected a rate like "100/10m"'),
        ("0/1m", 'the count before "/" must be a whole number >= 1, as in "100/10m"'),
        ("-1/1m", "whole number >= 1"),
        ("1.5/1m", "whole number >= 1"),
        ("/1m", "whole number >= 1"),
        ("\u0661/1m", "whole number >= 1"),  # a non-ASCII digit
        ("100 / 10m", "whole number >= 1"),
        ("100/10", 'invalid duration "10": missing unit after 10'),
        ("100/0s", 'invalid duration "0s": must be greater than zero'),
        ("100/", 'invalid duration "": empty'),
        ("100/10x", 'unknown unit "x"'),
        ("100/10m/2", 'invalid duration "10m/2"'),
    ],
)
def test_bad_rate_names_the_value_and_the_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_rate(text)
    assert str(info.value).startswith(f'invalid rate "{text}": ')
    assert why in str(info.value)
