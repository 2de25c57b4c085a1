"""Triggers: explicit tables for the rules an operator reads in docs/time.md, then a check of
cron against a deliberately naive reference over whole DST-change days.

The reference shares nothing with ``schedd.triggers``: no croniter, no PEP 495 folds, no
bisection. It walks UTC minute by minute, reads the local clock and applies Debian's rules as
they are stated: a fixed time fires when the clock first shows it, or when the clock jumps over
it; anything else fires whenever the clock shows a matching reading.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedd.errors import InvalidArgument
from schedd.model import CronSpec, IntervalSpec, OnceSpec, TriggerSpec
from schedd.triggers import (
    _Cron,
    _daily_period_ms,
    jitter_bound_ms,
    make_trigger,
    occurrences,
    stable_jitter_ms,
)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def ms(text: str) -> int:
    """UTC milliseconds of a naive ISO text read as UTC (independent of schedd.keys)."""
    delta = datetime.fromisoformat(text).replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // timedelta(milliseconds=1)


def cron(expr: str, tz: str = "UTC") -> CronSpec:
    return CronSpec(expr, tz)


# --- cron, table-driven -----------------------------------------------------------------------

BERLIN = "Europe/Berlin"  # 2026-03-29 02:00 CET -> 03:00 CEST at 01:00Z;
#                           2026-10-25 03:00 CEST -> 02:00 CET at 01:00Z
NEW_YORK = "America/New_York"  # 2026-03-08 02:00 EST -> 03:00 EDT at 07:00Z;
#                                2026-11-01 02:00 EDT -> 01:00 EST at 06:00Z

CRON_CASES = [
    # (expression, zone, after (UTC), expected occurrences (UTC))
    # Spring forward, fixed time: the gap's reading fires once, at the end of the gap.
    ("30 2 * * *", BERLIN, "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:30"]),
    ("0 2 * * *", BERLIN, "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:00"]),
    # Several gap readings collapse into that one firing.
    (
        "30,45 2 * * *",
        BERLIN,
        "2026-03-28T12:00",
        ["2026-03-29T01:00", "2026-03-30T00:30", "2026-03-30T00:45"],
    ),
    # ... and so does a gap reading with the reading right after the gap.
    ("30 2,3 * * *", BERLIN, "2026-03-29T00:00", ["2026-03-29T01:00", "2026-03-29T01:30"]),
    ("30 2 * * *", NEW_YORK, "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:30"]),
    # Spring forward, rhythm: nothing in the gap, the real-time rhythm goes on.
    (
        "*/15 * * * *",
        BERLIN,
        "2026-03-29T00:30",
        ["2026-03-29T00:45", "2026-03-29T01:00", "2026-03-29T01:15"],
    ),
    (
        "*/30 * * * *",
        NEW_YORK,
        "2026-03-08T06:15",
        ["2026-03-08T06:30", "2026-03-08T07:00", "2026-03-08T07:30"],
    ),
    # A fixed hour with a wildcard minute is a rhythm: no 03:00 stand-in (croniter adds one).
    ("*/20 2 * * *", BERLIN, "2026-03-28T12:00", ["2026-03-30T00:00", "2026-03-30T00:20"]),
    # Fall back, fixed time: the first pass only.
    ("30 2 * * *", BERLIN, "2026-10-24T12:00", ["2026-10-25T00:30", "2026-10-26T01:30"]),
    ("30 1 * * *", NEW_YORK, "2026-10-31T12:00", ["2026-11-01T05:30", "2026-11-02T06:30"]),
    # ... also when asked from inside the second pass.
    ("30 2 * * *", BERLIN, "2026-10-25T01:15", ["2026-10-26T01:30"]),
    # Fall back, rhythm: both passes.
    (
        "0 * * * *",
        BERLIN,
        "2026-10-24T23:30",
        ["2026-10-25T00:00", "2026-10-25T01:00", "2026-10-25T02:00"],
    ),
    # Asked from the first pass, the second pass's 02:00 comes before the 03:00 reading.
    ("0 * * * *", BERLIN, "2026-10-25T00:40", ["2026-10-25T01:00", "2026-10-25T02:00"]),
    (
        "*/20 1 * * *",
        NEW_YORK,
        "2026-11-01T04:50",
        [
            "2026-11-01T05:00",
            "2026-11-01T05:20",
            "2026-11-01T05:40",
            "2026-11-01T06:00",
            "2026-11-01T06:20",
            "2026-11-01T06:40",
            "2026-11-02T06:00",
        ],
    ),
    # Aliases: @hourly is a rhythm, @daily a fixed time (as in Debian's cron).
    (
        "@hourly",
        BERLIN,
        "2026-10-24T23:30",
        ["2026-10-25T00:00", "2026-10-25T01:00", "2026-10-25T02:00"],
    ),
    ("@daily", NEW_YORK, "2026-03-07T12:00", ["2026-03-08T05:00", "2026-03-09T04:00"]),
    # 6 fields (seconds last) are always a rhythm, even with fixed minute and hour.
    ("30 2 * * * 0", BERLIN, "2026-10-24T12:00", ["2026-10-25T00:30", "2026-10-25T01:30"]),
    ("30 2 * * * 0", BERLIN, "2026-03-28T00:00", ["2026-03-28T01:30", "2026-03-30T00:30"]),
    (
        "* * * * * */20",
        "UTC",
        "2026-01-01T00:00",
        ["2026-01-01T00:00:20", "2026-01-01T00:00:40", "2026-01-01T00:01:00"],
    ),
    # An every-second rhythm jumps the whole gap in one step.
    (
        "* * * * * *",
        BERLIN,
        "2026-03-29T00:59:59",
        ["2026-03-29T01:00:00", "2026-03-29T01:00:01"],
    ),
    # Month ends: months without a 31st are skipped.
    (
        "0 0 31 * *",
        "UTC",
        "2026-01-31T00:00",
        ["2026-03-31T00:00", "2026-05-31T00:00", "2026-07-31T00:00", "2026-08-31T00:00"],
    ),
    # 29 February waits for the next leap year.
    ("0 12 29 2 *", "UTC", "2026-01-01T00:00", ["2028-02-29T12:00", "2032-02-29T12:00"]),
    ("0 12 29 2 *", "UTC", "2028-02-29T12:00", ["2032-02-29T12:00"]),
    # Day-of-month and day-of-week both restricted: either matches (Vixie/Debian cron).
    ("0 0 13 * 5", "UTC", "2026-02-01T00:00", ["2026-02-06T00:00", "2026-02-13T00:00"]),
    # A local zone without DST shifts every occurrence by its offset.
    ("0 9 * * *", "Asia/Tokyo", "2026-06-01T00:00", ["2026-06-02T00:00", "2026-06-03T00:00"]),
]


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), CRON_CASES)
def test_cron_occurrences_follow_the_documented_rules(
    expr: str, tz: str, after: str, expected: list[str]
) -> None:
    trigger = make_trigger(cron(expr, tz))
    assert occurrences(trigger, ms(after), len(expected)) == [ms(e) for e in expected]


def test_cron_next_after_is_strictly_after_and_ignores_the_sub_second_part() -> None:
    trigger = make_trigger(cron("* * * * *"))
    assert trigger.next_after(ms("2026-01-01T10:00")) == ms("2026-01-01T10:01")
    assert trigger.next_after(ms("2026-01-01T10:00") - 1) == ms("2026-01-01T10:00")
    assert trigger.next_after(ms("2026-01-01T10:00") + 500) == ms("2026-01-01T10:01")


def test_cron_reuses_its_last_answer_only_for_instants_before_that_answer() -> None:
    trigger = make_trigger(cron("0 * * * *"))
    assert trigger.next_after(ms("2026-01-01T10:05")) == ms("2026-01-01T11:00")
    assert trigger.next_after(ms("2026-01-01T10:59")) == ms("2026-01-01T11:00")
    assert trigger.next_after(ms("2026-01-01T11:00")) == ms("2026-01-01T12:00"), "at it: next"
    assert trigger.next_after(ms("2026-01-01T09:30")) == ms("2026-01-01T10:00"), "earlier"


def test_cron_occurrences_do_not_exist_past_year_9998() -> None:
    assert make_trigger(cron("0 0 * * *")).next_after(ms("9999-06-01T00:00")) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (cron("61 * * * *"), 'invalid cron expression "61 * * * *": minute field "61"'),
        (cron("0 24 * * *"), 'invalid cron expression "0 24 * * *": hour field "24"'),
        (cron("0 0 * * mon#6"), 'day-of-week field "mon#6"'),
        (cron("* * *"), 'invalid cron expression "* * *": expected 5 fields'),
        (cron(""), "expected 5 fields"),
        (cron("0 0 1 1 * 0 2030"), "got 7"),
        (cron("0 0 30 2 *"), 'invalid cron expression "0 0 30 2 *": it never matches'),
        (cron("R * * * *"), "random fields (H, R) are not supported"),
        (cron("H 0 * * *"), "random fields (H, R) are not supported"),
        (cron("@reboot"), 'invalid cron expression "@reboot": unknown alias'),
        (cron("0 0 * * *", "Mars/Base"), 'unknown time zone "Mars/Base"'),
        (cron("0 0 * * *", "Europe"), 'unknown time zone "Europe"'),
        (cron("0 0 * * *", "../etc/passwd"), 'unknown time zone "../etc/passwd"'),
        (IntervalSpec(0), "interval must be positive"),
        (IntervalSpec(-5), "interval must be positive"),
    ],
)
def test_invalid_trigger_is_refused_with_a_message_naming_it(
    spec: TriggerSpec, message: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        make_trigger(spec)
    assert message in str(exc.value)


def test_cron_period_hint_is_the_shortest_gap() -> None:
    assert make_trigger(cron("0 9 * * 1-5")).period_hint_ms() == DAY_MS
    assert make_trigger(cron("0,30 9 * * *")).period_hint_ms() == 30 * MINUTE_MS
    assert make_trigger(cron("* * * * * */2")).period_hint_ms() == 2_000


@pytest.mark.parametrize(
    ("expr", "daily"),
    [
        ("30 2 * * *", True),
        ("@daily", True),
        ("0 9,17 * * *", True),
        ("0 0,23 * * *", True),  # the shortest gap goes round midnight
        ("59 23 * * *", True),
        ("0-5/5 3 * * *", True),
        ("0 0-7 * * *", True),  # 8 times a day: the samples still go round the day
        ("0 0-8 * * *", False),  # 9: they do not
        ("5 3 * * * 10,40", True),
        ("5 3 * * * *", False),
        ("*/15 * * * *", False),
        ("0 9 * * 1-5", False),
        ("0 0 1 * *", False),
        ("0 0 * 1-6 *", False),
        ("0 0 L * *", False),
        ("0 0 1-31 * *", True),  # a full range is "*" to croniter
        ("0 0 1-31 * 0-7", False),  # but not both days: it keeps them for their "or"
    ],
)
def test_a_daily_cron_period_is_worked_out_as_sampling_finds_it(expr: str, daily: bool) -> None:
    trigger = make_trigger(cron(expr))
    assert isinstance(trigger, _Cron)
    assert (_daily_period_ms(trigger._iter.expanded) is not None) == daily
    assert trigger.period_hint_ms() == trigger._sampled_period_ms()


@settings(max_examples=150, deadline=None)
@given(
    st.sets(st.integers(0, 59), min_size=1, max_size=3),
    st.sets(st.integers(0, 23), min_size=1, max_size=4),
    st.sets(st.integers(0, 59), max_size=2),
)
def test_any_daily_cron_period_is_worked_out_as_sampling_finds_it(
    minutes: set[int], hours: set[int], seconds: set[int]
) -> None:
    fields = [minutes, hours] + ([seconds] if seconds else [])
    expr = " ".join(",".join(map(str, sorted(f))) for f in fields[:2]) + " * * *"
    if seconds:
        expr += " " + ",".join(map(str, sorted(seconds)))
    trigger = make_trigger(cron(expr))
    assert isinstance(trigger, _Cron)
    assert trigger.period_hint_ms() == trigger._sampled_period_ms()


# --- intervals and one-shots ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "anchor", "after", "expected"),
    [
        (MINUTE_MS, 0, 0, [MINUTE_MS, 2 * MINUTE_MS]),
        (MINUTE_MS, 0, MINUTE_MS - 1, [MINUTE_MS, 2 * MINUTE_MS]),
        (MINUTE_MS, 0, MINUTE_MS, [2 * MINUTE_MS, 3 * MINUTE_MS]),
        # Anchored at the epoch: the series does not depend on when it is asked.
        (HOUR_MS, 0, ms("2026-05-05T10:17:03"), [ms("2026-05-05T11:00"), ms("2026-05-05T12:00")]),
        (HOUR_MS, 15 * MINUTE_MS, ms("2026-05-05T10:17"), [ms("2026-05-05T11:15")]),
        # The anchor is the first occurrence.
        (1_000, 5_000, 0, [5_000, 6_000]),
        (1_000, 5_000, 4_999, [5_000, 6_000]),
        (1_000, 5_000, 5_000, [6_000, 7_000]),
    ],
)
def test_interval_occurs_at_anchor_plus_multiples_of_every(
    every: int, anchor: int, after: int, expected: list[int]
) -> None:
    trigger = make_trigger(IntervalSpec(every, anchor))
    assert occurrences(trigger, after, len(expected)) == expected
    assert trigger.period_hint_ms() == every


def test_one_shot_occurs_once_and_only_after_the_given_instant() -> None:
    trigger = make_trigger(OnceSpec(5_000))
    assert trigger.next_after(4_999) == 5_000
    assert trigger.next_after(-(2**62)) == 5_000
    assert trigger.next_after(5_000) is None
    assert occurrences(trigger, 0, 3) == [5_000]
    assert trigger.period_hint_ms() is None


def test_occurrences_returns_nothing_for_a_zero_count() -> None:
    assert occurrences(make_trigger(IntervalSpec(1_000)), 0, 0) == []


# --- jitter -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "jitter_ms", "expected"),
    [
        (cron("*/5 * * * *"), None, 30_000),  # a tenth of 5 minutes
        (cron("0 * * * *"), None, 60_000),  # capped at 60 s
        (cron("* * * * * */2"), None, 200),
        (IntervalSpec(10_000), None, 1_000),
        (OnceSpec(5_000), None, 0),
        (cron("*/5 * * * *"), 0, 0),
        (cron("*/5 * * * *"), 45_000, 45_000),
        (IntervalSpec(10_000), 3_000, 3_000),
    ],
)
def test_jitter_bound_defaults_to_a_tenth_of_the_period_capped_at_a_minute(
    spec: TriggerSpec, jitter_ms: int | None, expected: int
) -> None:
    assert jitter_bound_ms(make_trigger(spec), jitter_ms) == expected


def test_negative_jitter_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="jitter must not be negative"):
        jitter_bound_ms(make_trigger(IntervalSpec(10_000)), -1)


def test_stable_jitter_is_pinned_across_processes_and_versions() -> None:
    # A literal, not a recomputation: changing the hash would move every schedule's firings.
    assert stable_jitter_ms("nightly-backup", 60_000) == 49_509
    assert stable_jitter_ms("nightly-backup", 60_000) == stable_jitter_ms("nightly-backup", 60_000)


def test_stable_jitter_stays_in_range_and_spreads_names() -> None:
    values = [stable_jitter_ms(f"job-{i}", 1_000) for i in range(2_000)]
    assert all(0 <= v < 1_000 for v in values)
    assert len(set(values)) > 800
    assert min(values) < 100
    assert max(values) > 900


@pytest.mark.parametrize("bound", [0, -1])
def test_stable_jitter_is_zero_when_off(bound: int) -> None:
    assert stable_jitter_ms("nightly-backup", bound) == 0


# --- cron against an independent brute-force reference ----------------------------------------

_REF_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *"}
_ONE_MINUTE = timedelta(minutes=1)


def _values(field: str, lo: int, hi: int) -> set[int]:
    """The numbers a plain cron field (``*``, ``a``, ``a-b``, ``/n``, lists) stands for."""
    found: set[int] = set()
    for part in field.split(","):
        body, _, step = part.partition("/")
        if body == "*":
            start, end = lo, hi
        elif "-" in body:
            start, end = (int(x) for x in body.split("-"))
        else:
            start = int(body)
            end = hi if step else start
        found.update(range(start, end + 1, int(step or 1)))
    return found


class Reference:
    """Debian's cron, by brute force over UTC minutes."""

    def __init__(self, expr: str) -> None:
        fields = _REF_ALIASES.get(expr, expr).split()
        self.fixed = len(fields) == 5 and fields[0][0] != "*" and fields[1][0] != "*"
        self.minutes = _values(fields[0], 0, 59)
        self.hours = _values(fields[1], 0, 23)
        self.days = _values(fields[2], 1, 31)
        self.months = _values(fields[3], 1, 12)
        self.weekdays = {d % 7 for d in _values(fields[4], 0, 7)}
        self.day_or_weekday = fields[2][0] != "*" and fields[4][0] != "*"
        self.seconds = sorted(_values(fields[5], 0, 59)) if len(fields) == 6 else [0]

    def shows(self, reading: datetime) -> bool:
        if not (
            reading.minute in self.minutes
            and reading.hour in self.hours
            and reading.month in self.months
        ):
            return False
        day, weekday = reading.day in self.days, reading.isoweekday() % 7 in self.weekdays
        return (day or weekday) if self.day_or_weekday else (day and weekday)

    def firings(self, zone: ZoneInfo, start_ms: int, end_ms: int) -> list[int]:
        fired: list[int] = []
        latest: datetime | None = None  # the latest reading the clock has shown
        for minute_ms in range(start_ms, end_ms, MINUTE_MS):
            reading = datetime.fromtimestamp(minute_ms // 1000, zone).replace(tzinfo=None)
            if not self.fixed:
                if self.shows(reading):
                    fired.extend(minute_ms + s * 1000 for s in self.seconds)
            elif latest is None or reading > latest:
                # First time the clock shows this reading; readings it jumped over count too.
                jumped = []
                if latest is not None:
                    jumped = [
                        latest + k * _ONE_MINUTE
                        for k in range(1, (reading - latest) // _ONE_MINUTE)
                    ]
                if self.shows(reading) or any(self.shows(r) for r in jumped):
                    fired.append(minute_ms)
            latest = reading if latest is None else max(latest, reading)
        return fired


DST_DAYS = [
    (BERLIN, "2026-03-29"),
    (BERLIN, "2026-10-25"),
    (NEW_YORK, "2026-03-08"),
    (NEW_YORK, "2026-11-01"),
    # Half-hour DST: 02:00 -> 01:30 and 02:00 -> 02:30.
    ("Australia/Lord_Howe", "2026-04-05"),
    ("Australia/Lord_Howe", "2026-10-04"),
    # Changes at local midnight: 24:00 -> 23:00 and 00:00 -> 01:00.
    ("America/Santiago", "2026-04-05"),
    ("America/Santiago", "2026-09-06"),
]

REFERENCE_EXPRESSIONS = [
    # fixed-time
    "30 2 * * *",
    "30,45 2 * * *",
    "0 2 * * *",
    "59 1 * * *",
    "0 3 * * *",
    "15 1-3 * * *",
    "0,30 0-3 * * *",
    "0 0 * * *",
    "30 23 * * *",
    "10 2 5-8 * 0",
    "@daily",
    # rhythm
    "*/15 * * * *",
    "*/20 1 * * *",
    "*/7 2 * * *",
    "* 2 * * *",
    "0 * * * *",
    "@hourly",
    "30 2 * * * 0,30",
    "*/30 * * * * 15",
]


@pytest.mark.parametrize("expr", REFERENCE_EXPRESSIONS)
@pytest.mark.parametrize(("tz", "day"), DST_DAYS)
def test_cron_matches_the_brute_force_reference_over_a_dst_day(
    tz: str, day: str, expr: str
) -> None:
    zone = ZoneInfo(tz)
    start, end = ms(day) - 12 * HOUR_MS, ms(day) + 36 * HOUR_MS
    changes = [
        t
        for t in range(start, end, MINUTE_MS)
        if datetime.fromtimestamp(t // 1000, zone).utcoffset()
        != datetime.fromtimestamp(t // 1000 + 60, zone).utcoffset()
    ]
    assert len(changes) == 1, "the window must contain the DST change under test"
    expected = Reference(expr).firings(zone, start, end)
    trigger = make_trigger(cron(expr, tz))

    series = [o for o in occurrences(trigger, start - 1, len(expected) + 1) if o < end]
    assert series == expected

    # From every minute around the change (on and between occurrences), the next one agrees.
    for after in range(changes[0] - 3 * HOUR_MS, changes[0] + 3 * HOUR_MS, MINUTE_MS):
        for probe in (after, after + 29_999):
            want = next((e for e in expected if e > probe), None)
            if want is not None:
                assert trigger.next_after(probe) == want, probe
