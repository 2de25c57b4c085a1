"""Names, instants and idempotency keys: the textual forms that leave the daemon.

A firing's key, ``"<schedule>@<scheduled_for>"``, is what downstream systems use to collapse the
duplicates at-least-once delivery may produce (DESIGN §2), so the text must be a pure function of
the firing: UTC, always with milliseconds, always ``Z``, never the host's zone or locale. Then a
retry, a re-run after a crash and a re-plan after restart all carry the same bytes.

Parsing is generous (any ISO 8601 form Python reads, ``Z`` or an offset), formatting is strict,
and ``parse_instant(format_instant(t)) == t`` for every representable ``t``. A naive time is
read in the schedule's zone by the same rule as a fixed-time cron (first pass of a repeated
hour, end of a gap), so ``at = "2026-03-29T02:30:00"`` in Europe/Berlin means 03:00 CEST.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final

from schedd import errors
from schedd.triggers import load_zone, local_to_ms

NAME_RE: re.Pattern[str] = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def validate_name(name: str, what: str = "schedule name") -> str:
    """``name`` itself if it is a valid name (DESIGN §1); InvalidArgument naming it otherwise."""
    if not NAME_RE.fullmatch(name):
        raise errors.InvalidArgument(
            f'invalid {what} "{name}": use 1-128 characters of a-z, 0-9, ".", "_", "-", '
            "starting with a letter or digit"
        )
    return name


@lru_cache(maxsize=4096)
def format_instant(ms: int) -> str:
    """UTC RFC 3339 with milliseconds, e.g. ``2026-03-29T01:00:00.000Z``.

    Cached: a pulse formats the same few instants once per schedule (every schedule due at one
    instant shares it), and the text is a pure function of ``ms``.
    """
    try:
        dt = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise errors.InvalidArgument(f"instant {ms} ms is outside years 1-9999") from None
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def parse_instant(text: str, default_tz: str = "UTC") -> int:
    """UTC ms of an ISO 8601 / RFC 3339 instant; a naive one is read in ``default_tz``.

    Sub-millisecond digits round up (never early).
    """
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise errors.InvalidArgument(
            f'invalid instant "{text}": expected ISO 8601, e.g. "2026-12-01T09:00:00Z", '
            '"2026-12-01T10:00:00+01:00" or "2026-12-01T09:00:00" (in the schedule\'s zone)'
        ) from None
    if dt.tzinfo is None:
        return local_to_ms(dt, load_zone(default_tz))
    return -(-(dt - _EPOCH) // _MS)


def firing_key(schedule: str, scheduled_for_ms: int) -> str:
    """The idempotency key of one occurrence of one schedule (DESIGN §1)."""
    return f"{schedule}@{format_instant(scheduled_for_ms)}"
