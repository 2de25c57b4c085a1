"""Names, instants and idempotency keys: the exact text downstream systems see."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedd.errors import InvalidArgument
from schedd.keys import NAME_RE, firing_key, format_instant, parse_instant, validate_name

# 2026-03-29T01:00:00Z: the moment Berlin springs forward.
SPRING_BERLIN_MS = 1_774_746_000_000


@pytest.mark.parametrize("name", ["a", "7", "nightly-backup", "billing.retry_v2", "a" * 128])
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name) == name
    assert NAME_RE.fullmatch(name)


@pytest.mark.parametrize(
    "name", ["", "Nightly", "-x", ".x", "_x", "x y", "x/y", "a" * 129, "caf\u00e9", "x\n"]
)
def test_invalid_names_are_refused_naming_them(name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_name(name)
    assert f'invalid schedule name "{name}"' in str(exc.value)


def test_invalid_name_message_says_what_kind_of_name() -> None:
    with pytest.raises(InvalidArgument, match='invalid lane name "Bulk"'):
        validate_name("Bulk", "lane name")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (SPRING_BERLIN_MS, "2026-03-29T01:00:00.000Z"),
        (SPRING_BERLIN_MS + 7, "2026-03-29T01:00:00.007Z"),
        (SPRING_BERLIN_MS + 999, "2026-03-29T01:00:00.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
    ],
)
def test_format_instant_is_utc_with_milliseconds_and_z(ms: int, text: str) -> None:
    assert format_instant(ms) == text


def test_format_instant_refuses_instants_datetime_cannot_hold() -> None:
    with pytest.raises(InvalidArgument, match="outside years 1-9999"):
        format_instant(10**18)


def test_firing_key_is_schedule_at_instant() -> None:
    assert firing_key("nightly", SPRING_BERLIN_MS) == "nightly@2026-03-29T01:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "tz", "ms"),
    [
        ("2026-03-29T01:00:00Z", "UTC", SPRING_BERLIN_MS),
        ("2026-03-29T01:00:00.000Z", "Europe/Berlin", SPRING_BERLIN_MS),  # Z wins over the zone
        ("2026-03-29T03:00:00+02:00", "UTC", SPRING_BERLIN_MS),
        ("2026-03-28T20:00:00-05:00", "UTC", SPRING_BERLIN_MS),
        ("2026-03-29 01:00:00.123Z", "UTC", SPRING_BERLIN_MS + 123),
        # A fraction of a millisecond rounds up: late beats early.
        ("2026-03-29T01:00:00.000001Z", "UTC", SPRING_BERLIN_MS + 1),
        # Naive: read in the zone.
        ("2026-03-29T01:00:00", "UTC", SPRING_BERLIN_MS),
        ("2026-03-29T03:00:00", "Europe/Berlin", SPRING_BERLIN_MS),
        ("2026-12-01T09:00:00", "America/New_York", 1_796_133_600_000),
        ("2026-12-01", "UTC", 1_796_083_200_000),
        # Naive inside the spring-forward gap: the end of the gap, like a fixed-time cron.
        ("2026-03-29T02:30:00", "Europe/Berlin", SPRING_BERLIN_MS),
        # Naive inside the repeated fall-back hour: the first pass (02:30 CEST = 00:30Z).
        ("2026-10-25T02:30:00", "Europe/Berlin", 1_792_888_200_000),
    ],
)
def test_parse_instant_reads_z_offsets_and_naive_times_in_a_zone(
    text: str, tz: str, ms: int
) -> None:
    assert parse_instant(text, tz) == ms


@pytest.mark.parametrize("text", ["garbage", "", "2026-13-01T00:00:00Z", "2026-03-29T25:00"])
def test_parse_instant_refuses_garbage_quoting_it(text: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_instant(text)
    assert f'invalid instant "{text}"' in str(exc.value)


def test_parse_instant_refuses_an_unknown_zone_for_naive_text() -> None:
    with pytest.raises(InvalidArgument, match='unknown time zone "Mars/Base"'):
        parse_instant("2026-12-01T09:00:00", "Mars/Base")


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_format_then_parse_round_trips_every_instant(ms: int) -> None:
    assert parse_instant(format_instant(ms)) == ms
