"""How fast the catch-up backlog is released: a token bucket whose rate is steered by AIMD.

After an outage the planner commits the missed occurrences (``fire_once``/``fire_all``) marked
``catchup``. Released all at once they would bury the fresh work of the moment and hammer the
systems the tasks talk to, which are often the very systems that were down (DESIGN §5). So the
runner takes them from the store only as this drain allows:

* **Rate**: tokens accrue at ``rate`` per second, with a burst of at most one second's worth,
  so a quiet spell banks no flood. A new backlog starts with that burst in hand: the common
  case, a short restart leaving a few collapsed ``fire_once`` firings, goes out at once.
* **Multiplicative decrease**: every ``window`` finished runs the drain looks at how many
  failed; above ``max_failure_ratio`` the rate halves (not below ``min_rate``). Runs of fresh
  work count too: a downstream overloaded by the backlog fails fresh runs as well, and that is
  exactly the signal to back off on.
* **Additive increase**: a window at or under the ratio adds ``step`` per second (not above
  ``max_rate``), probing for what the downstream can take.
* A drained backlog resets the rate: the next outage starts from the configured ``rate``, not
  from whatever the last one ended at.

Pure and deterministic: the caller passes monotonic milliseconds in and gets counts out, so the
controller is tested exactly on a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schedd.model import RunOutcome

#: Outcomes that say nothing about the downstream's health: schedd stopped the run itself.
_NEUTRAL = frozenset({RunOutcome.LOST, RunOutcome.CANCELLED})


@dataclass(frozen=True)
class CatchupSettings:
    """``[catchup]``: the drain's starting rate, its bounds and how it adapts."""

    #: Firings per second released when a backlog appears.
    rate: float = 10.0
    min_rate: float = 0.5
    max_rate: float = 1000.0
    #: Added to the rate (per second) after a window whose failure ratio was acceptable.
    step: float = 10.0
    #: A window with a larger share of failed runs halves the rate.
    max_failure_ratio: float = 0.5
    #: Finished runs per adjustment: the evidence each decision rests on.
    window: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.rate <= self.max_rate:
            raise ValueError(
                f"catch-up rates must satisfy 0 < min_rate <= rate <= max_rate,"
                f" got {self.min_rate}, {self.rate}, {self.max_rate}"
            )


class CatchupDrain:
    def __init__(self, settings: CatchupSettings, now_ms: int) -> None:
        self._settings = settings
        self.rate = settings.rate
        self._tokens = self._burst()
        self._at = now_ms
        self._ok = 0
        self._failed = 0
        #: Adjustments since start, for the log and the metrics.
        self.halvings = 0
        self.increases = 0

    def available(self, now_ms: int) -> int:
        """Whole firings that may be released now."""
        self._refill(now_ms)
        return math.floor(self._tokens)

    def take(self, n: int) -> None:
        """``n`` firings were released (at most what :meth:`available` said)."""
        self._tokens = max(0.0, self._tokens - n)

    def next_token_ms(self, now_ms: int) -> int:
        """When (monotonic) the next whole token is due: the drain's next wake-up."""
        self._refill(now_ms)
        missing = 1.0 - (self._tokens - math.floor(self._tokens))
        return now_ms + max(1, math.ceil(missing * 1000 / self.rate))

    def observe(self, outcome: RunOutcome) -> str | None:
        """A run finished while the backlog drains; a line for the log if the rate changed."""
        if outcome in _NEUTRAL:
            return None
        if outcome is RunOutcome.SUCCEEDED:
            self._ok += 1
        else:
            self._failed += 1
        total = self._ok + self._failed
        if total < self._settings.window:
            return None
        ratio, before = self._failed / total, self.rate
        self._ok = self._failed = 0
        s = self._settings
        if ratio > s.max_failure_ratio:
            self.rate = max(s.min_rate, self.rate / 2)
            self.halvings += 1
            verb = "halved"
        else:
            self.rate = min(s.max_rate, self.rate + s.step)
            self.increases += 1
            verb = "raised"
        if self.rate == before:
            return None
        return (
            f"catch-up rate {verb} {before:g} -> {self.rate:g}/s"
            f" ({ratio:.0%} of the last {total} runs failed, limit {s.max_failure_ratio:.0%})"
        )

    def reset(self, now_ms: int) -> None:
        """A backlog appeared or drained: start again from the configured rate, one second's
        burst in hand, no evidence counted."""
        self.rate = self._settings.rate
        self._tokens = self._burst()
        self._at = now_ms
        self._ok = self._failed = 0

    def eta_ms(self, backlog: int) -> int | None:
        """How long ``backlog`` firings take at the current rate (None: nothing to drain)."""
        return None if backlog <= 0 else math.ceil(backlog * 1000 / self.rate)

    def _refill(self, now_ms: int) -> None:
        elapsed = now_ms - self._at
        if elapsed <= 0:
            return
        self._at = now_ms
        self._tokens = min(self._burst(), self._tokens + elapsed * self.rate / 1000)

    def _burst(self) -> float:
        return max(self.rate, 1.0)
