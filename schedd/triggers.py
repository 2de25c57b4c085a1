"""Triggers: when a schedule's occurrences fall, as pure functions of UTC milliseconds.

A trigger answers one question, ``next_after(t)``: the first occurrence strictly after ``t``.
The planner chains it from the high-water mark, so "strictly after" is what makes a committed
occurrence impossible to produce twice, whatever the wall clock does.

Cron and local time
-------------------
croniter is used only as a *field matcher on naive wall-clock times*: given a local reading it
returns the next reading that matches the fields. Mapping readings to instants is done here,
because croniter's own time-zone handling is not the rule operators expect. Measured with
croniter 7.0 and an aware start time in Europe/Berlin:

* spring forward (02:00 → 03:00): any expression whose hour field has no ``*`` is moved to
  03:00, so ``*/15 2 * * *`` gains an extra 03:00 firing;
* fall back (03:00 → 02:00): ``30 2 * * *`` fires twice, at 00:30Z and 01:30Z.

The rule we apply is Debian cron's (DESIGN §3). A *fixed-time* expression (5 fields whose
minute and hour fields both start with something other than ``*``, e.g. ``30 2 * * *``,
``0 9-17 * * 1-5``, ``@daily``) names moments of the local day: a reading inside a
spring-forward gap fires once, at the end of the gap (every reading of one gap collapses into
that single firing); a reading in a repeated fall-back stretch fires once, on its first pass.
Every other expression (``*/15 * * * *``, ``*/20 1 * * *``, ``@hourly``, any 6-field one) is a
*rhythm*: it fires at each real instant whose local reading matches, so nothing extra in a gap
and both passes of a repeated stretch.

Worked example, Berlin 2026-10-25 (CEST 03:00 → CET 02:00 at 01:00Z), ``a`` = 00:40Z = 02:40
CEST, rhythm ``0 * * * *``. The next reading after 02:40 that matches is 03:00 CET (02:00Z),
but the clock will read 02:00 again at 01:00Z, which is earlier. So when ``a`` lies in the first
pass of a repeated stretch, a rhythm also searches from the start of that stretch and keeps the
earlier answer. Readings are turned into instants with zoneinfo's PEP 495 ``fold``: for a
repeated reading ``fold=0`` is the first pass; for a reading in a gap ``fold=0`` lands after the
jump and ``fold=1`` before it, which is how a gap is recognised without any table of
transitions. The one transition instant needed (a gap's end, a repeat's start) is found by
bisecting the UTC offset over at most the size of the jump, to the second.

Cost: ``next_after`` is a couple of croniter steps (tens of microseconds). A gap is jumped
whole, not walked reading by reading, so a 6-field every-second expression stays cheap across a
DST night. Cron triggers are compiled once per ``(expression, zone)`` and shared, and each keeps
its last answer: in a pulse, thousands of schedules with the same expression ask the same
question. Sharing means a trigger must be used from one thread at a time (croniter keeps
state), which is how the daemon's single event loop uses it.

6-field expressions take seconds as the *last* field (croniter's default convention).
Occurrences before 1900 or after 9998 do not exist: nothing schedules there, and the clamp
keeps ``datetime`` inside its range for callers that pass "minus infinity".

Intervals occur at ``anchor + k * every`` for ``k >= 0``: the anchor (by default the Unix epoch)
is the first occurrence, so a restart or a reload never shifts the series.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from schedd import errors, model

_EPOCH: Final = datetime(1970, 1, 1)
_SECOND: Final = timedelta(seconds=1)
_MS: Final = timedelta(milliseconds=1)
_MIN_S: Final = (datetime(1900, 1, 1) - _EPOCH) // _SECOND
_MAX_S: Final = (datetime(9998, 1, 1) - _EPOCH) // _SECOND

#: Where the period of a cron expression is measured: a Monday, in a non-leap year.
_REFERENCE: Final = datetime(2001, 1, 1)
_PERIOD_SAMPLES: Final = 8
_MAX_DEFAULT_JITTER_MS: Final = 60_000
#: The hash that spreads schedules' jitter, before any name is fed to it.
_JITTER_HASH: Final = hashlib.blake2b(digest_size=8, person=b"schedd.jitter")

#: Resolved here rather than by croniter so the fixed-time rule sees the real fields
#: (``@daily`` is fixed-time, ``@hourly`` is a rhythm, as in Debian's cron).
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES: Final = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
#: croniter's field separator: ASCII whitespace only.
_FIELD_RE: Final = re.compile(r"\S+", re.ASCII)
#: Jenkins-style ``H``/``R`` fields: ``R`` draws a new random value on every parse, so the
#: occurrences would change on every restart.
_HASHED_RE: Final = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.IGNORECASE)
_CRONITER_PREFIX: Final = re.compile(r"^\[[^\]]*\]\s*")


class Trigger(Protocol):
    def next_after(self, after_ms: int) -> int | None:
        """The first occurrence strictly after after_ms (UTC ms), or None when there is none."""

    def period_hint_ms(self) -> int | None:
        """Typical gap between occurrences (for the jitter bound); None for one-shots."""


# --- zones and wall-clock readings --------------------------------------------------------------


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; InvalidArgument naming it when the database has no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a normalised relative key ("../x", "/etc/localtime");
        # OSError: a directory of the database ("Europe").
        raise errors.InvalidArgument(f'unknown time zone "{name}"') from None


def local_to_ms(wall: datetime, zone: ZoneInfo) -> int:
    """The instant a fixed-time schedule gives the naive reading ``wall`` in ``zone``.

    The first pass of a repeated stretch; in a spring-forward gap, the end of the gap. Shared
    with :func:`schedd.keys.parse_instant`, so ``at = "02:30"`` behaves like ``30 2 * * *``.
    A fraction of a millisecond rounds up: late beats early.
    """
    whole = wall.replace(microsecond=0)
    passes = _passes(whole, zone)
    if not passes:
        return _gap_end(whole, zone) * 1000
    return passes[0] * 1000 + -(-wall.microsecond // 1000)


def _instant(wall: datetime, zone: ZoneInfo, fold: int) -> int:
    offset = wall.replace(tzinfo=zone, fold=fold).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return (wall - offset - _EPOCH) // _SECOND


def _reading(instant_s: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(instant_s, zone).replace(tzinfo=None)


def _passes(wall: datetime, zone: ZoneInfo) -> tuple[int, ...]:
    """Every instant (s) at which the clock of ``zone`` reads ``wall``, earliest first.

    One normally; two in a repeated stretch; none in a gap, where fold=0 (offset before the
    jump) lands after the jump and fold=1 before it, i.e. the order is reversed.
    """
    first, second = _instant(wall, zone, 0), _instant(wall, zone, 1)
    if first == second:
        return (first,)
    return (first, second) if first < second else ()


def _offset_change(zone: ZoneInfo, lo_s: int, hi_s: int) -> int:
    """The first second in ``(lo_s, hi_s]`` whose UTC offset differs from ``lo_s``'s.

    Precondition: the offsets at ``lo_s`` and ``hi_s`` differ. tzdata transitions fall on
    whole seconds and ``hi_s - lo_s`` is at most one jump, so this is ~12 probes.
    """
    before = datetime.fromtimestamp(lo_s, zone).utcoffset()
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return hi_s


def _gap_end(wall: datetime, zone: ZoneInfo) -> int:
    """The instant (s) a spring-forward gap containing ``wall`` ends (the clock's jump)."""
    return _offset_change(zone, _instant(wall, zone, 1), _instant(wall, zone, 0))


# --- cron ----------------------------------------------------------------------------------------


class _Cron:
    __slots__ = ("_fixed_time", "_iter", "_last", "_period_ms", "_zone")

    def __init__(
        self, it: croniter[datetime], zone: ZoneInfo, fixed_time: bool, period_ms: int | None
    ) -> None:
        self._iter = it
        self._zone = zone
        self._fixed_time = fixed_time
        self._last: tuple[int, int | None] | None = None
        #: Known up front for a daily expression (:func:`_daily_period_ms`), else sampled once.
        self._period_ms = period_ms

    def next_after(self, after_ms: int) -> int | None:
        # The last answer holds for any instant from its question up to itself: no occurrence
        # lies between. Schedules sharing a cron ask with nearby ``now``s (a bulk add, a
        # dispatch step), so most questions are answered without croniter's search.
        last = self._last
        if last is not None and last[0] <= after_ms and (last[1] is None or after_ms < last[1]):
            return last[1]
        result = self._next_after_s(max(after_ms // 1000, _MIN_S))
        answer = None if result is None else result * 1000
        self._last = (after_ms, answer)
        return answer

    def period_hint_ms(self) -> int:
        """The shortest gap among the first few occurrences from a fixed reference.

        The shortest, so a default jitter of a tenth of it never pushes a firing past the next
        occurrence; measured on naive readings, so DST does not distort it.
        """
        if self._period_ms is None:
            self._period_ms = self._sampled_period_ms()
        return self._period_ms

    def _sampled_period_ms(self) -> int:
        first = self._match_after(_REFERENCE)
        assert first is not None  # the compile-time probe found it
        times = [first]
        for _ in range(_PERIOD_SAMPLES):
            nxt = self._match_after(times[-1])
            if nxt is None:
                break
            times.append(nxt)
        return min((b - a) // _MS for a, b in itertools.pairwise(times))

    def _next_after_s(self, after_s: int) -> int | None:
        if after_s >= _MAX_S:
            return None
        local = datetime.fromtimestamp(after_s, self._zone)
        best = self._walk(local.replace(tzinfo=None), after_s)
        if self._fixed_time or local.fold == 1:
            return best
        offset, second_pass_offset = local.utcoffset(), local.replace(fold=1).utcoffset()
        if offset is None or second_pass_offset is None or offset == second_pass_offset:
            return best
        # after_s is in the first pass of a repeated stretch: the second pass, still ahead,
        # re-reads earlier times that may match before anything after the current reading.
        repeat_at = _offset_change(
            self._zone, after_s, after_s + (offset - second_pass_offset) // _SECOND
        )
        again = self._walk(_reading(repeat_at, self._zone) - _SECOND, after_s)
        if best is None or again is None:
            return best if again is None else again
        return min(best, again)

    def _walk(self, reading: datetime, after_s: int) -> int | None:
        """The first instant after ``after_s`` of the matches following ``reading``."""
        match = self._match_after(reading)
        while match is not None:
            passes = _passes(match, self._zone)
            if not passes:
                end = _gap_end(match, self._zone)
                if self._fixed_time and end > after_s:
                    return end
                # Every other reading in this gap maps to the same end (fixed-time) or to
                # nothing (rhythm): resume at the first reading after the jump.
                match = self._match_after(_reading(end, self._zone) - _SECOND)
                continue
            for instant in passes[:1] if self._fixed_time else passes:
                if instant > after_s:
                    return instant
            match = self._match_after(match)
        return None

    def _match_after(self, reading: datetime) -> datetime | None:
        try:
            return self._iter.get_next(datetime, start_time=reading)
        except (CroniterBadDateError, OverflowError):
            # No match within croniter's search horizon (50 years), or past year 9999.
            return None


def _cron_error(expr: str, reason: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f'invalid cron expression "{expr}": {reason}')


def _bad_field(fields: list[str]) -> str | None:
    """Which field croniter refuses, probed one at a time, for a message that points at it."""
    for index, value in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[index] = value
        try:
            croniter(" ".join(probe), _REFERENCE, ret_type=datetime)
        except CroniterError as exc:
            return f'{_FIELD_NAMES[index]} field "{value}" {_CRONITER_PREFIX.sub("", str(exc))}'
    return None


@lru_cache(maxsize=4096)
def _compile_cron(spec: model.CronSpec) -> _Cron:
    expr = spec.expr.strip()
    if expr.startswith("@") and expr.lower() not in _ALIASES:
        raise _cron_error(spec.expr, f"unknown alias (known: {', '.join(_ALIASES)})")
    fields = _FIELD_RE.findall(_ALIASES.get(expr.lower(), expr))
    if len(fields) not in (5, 6):
        raise _cron_error(
            spec.expr,
            f"expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or 6 (seconds last), got {len(fields)}",
        )
    if any(_HASHED_RE.fullmatch(field) for field in fields):
        raise _cron_error(spec.expr, "hashed or random fields (H, R) are not supported")
    zone = load_zone(spec.timezone)
    try:
        it = croniter(" ".join(fields), _REFERENCE, ret_type=datetime)
        # Probe once, so an expression that can never match (30 February) is refused here
        # rather than silently never firing.
        it.get_next(datetime)
    except CroniterBadDateError:
        raise _cron_error(spec.expr, "it never matches a date") from None
    except CroniterBadCronError as exc:
        raise _cron_error(spec.expr, _bad_field(fields) or str(exc)) from None
    fixed_time = (
        len(fields) == 5 and not fields[0].startswith("*") and not fields[1].startswith("*")
    )
    return _Cron(it, zone, fixed_time, _daily_period_ms(it.expanded))


def _daily_period_ms(expanded: Sequence[Sequence[int | str]]) -> int | None:
    """The period hint of an expression that matches the same few times every day, or None.

    With day-of-month, month and day-of-week all ``*`` (croniter writes any full range so)
    every day has the same matching times. When there are at most :data:`_PERIOD_SAMPLES` of
    them, the gaps :meth:`_Cron.period_hint_ms` samples go round the whole daily cycle, so its
    answer is the shortest gap of that cycle: worked out here without croniter's nine
    searches, which were most of the cost of compiling a daily cron such as ``30 2 * * *``.
    """
    minutes, hours, days, months, weekdays, *more = expanded
    seconds = more[0] if more else [0]
    if days != ["*"] or months != ["*"] or weekdays != ["*"]:
        return None
    if "*" in minutes or "*" in hours or "*" in seconds:
        return None
    times = sorted(
        {3600 * int(h) + 60 * int(m) + int(s) for h in hours for m in minutes for s in seconds}
    )
    if len(times) > _PERIOD_SAMPLES:
        return None
    wrap = times[0] + 86_400 - times[-1]
    return 1000 * min([wrap, *(b - a for a, b in itertools.pairwise(times))])


# --- intervals and one-shots ---------------------------------------------------------------------


class _Interval:
    __slots__ = ("_anchor_ms", "_every_ms")

    def __init__(self, every_ms: int, anchor_ms: int) -> None:
        self._every_ms = every_ms
        self._anchor_ms = anchor_ms

    def next_after(self, after_ms: int) -> int | None:
        if after_ms < self._anchor_ms:
            return self._anchor_ms
        k = (after_ms - self._anchor_ms) // self._every_ms + 1
        return self._anchor_ms + k * self._every_ms

    def period_hint_ms(self) -> int:
        return self._every_ms


class _Once:
    __slots__ = ("_at_ms",)

    def __init__(self, at_ms: int) -> None:
        self._at_ms = at_ms

    def next_after(self, after_ms: int) -> int | None:
        return self._at_ms if self._at_ms > after_ms else None

    def period_hint_ms(self) -> None:
        return None


# --- public functions ----------------------------------------------------------------------------


def make_trigger(spec: model.TriggerSpec) -> Trigger:
    """Parse and validate ``spec`` once; InvalidArgument says what is wrong with it."""
    match spec:
        case model.CronSpec():
            return _compile_cron(spec)
        case model.IntervalSpec(every_ms, anchor_ms):
            if every_ms <= 0:
                raise errors.InvalidArgument(f"interval must be positive, got {every_ms} ms")
            return _Interval(every_ms, anchor_ms)
        case model.OnceSpec(at_ms):
            return _Once(at_ms)


def occurrences(trigger: Trigger, after_ms: int, count: int) -> list[int]:
    """Up to ``count`` occurrences strictly after ``after_ms`` (fewer when the series ends)."""
    found: list[int] = []
    cursor: int | None = after_ms
    while len(found) < count and cursor is not None:
        cursor = trigger.next_after(cursor)
        if cursor is not None:
            found.append(cursor)
    return found


def jitter_bound_ms(trigger: Trigger, jitter_ms: int | None) -> int:
    """The jitter bound of a schedule: its own, or by default min(period / 10, 60 s).

    One-shots default to none: an instant someone typed is meant literally. ``trigger`` is the
    schedule's, already made: the caller has it at hand.
    """
    if jitter_ms is not None:
        if jitter_ms < 0:
            raise errors.InvalidArgument(f"jitter must not be negative, got {jitter_ms} ms")
        return jitter_ms
    period = trigger.period_hint_ms()
    return 0 if period is None else min(period // 10, _MAX_DEFAULT_JITTER_MS)


def stable_jitter_ms(name: str, bound_ms: int) -> int:
    """A delay in ``[0, bound_ms)`` fixed by the schedule's name.

    hashlib, not ``hash()``: string hashing is salted per process, and the delay must be the
    same after every restart, on every host. Spreading by name de-synchronises schedules that
    share an expression, so ``0 * * * *`` does not become one thundering pulse.
    """
    if bound_ms <= 0:
        return 0
    hasher = _JITTER_HASH.copy()  # cheaper than setting up the personalised state again
    hasher.update(name.encode())
    return int.from_bytes(hasher.digest(), "big") % bound_ms
