"""Token buckets: how a tenant's retry budget is spent and refilled (DESIGN §5).

A tenant's ``retry_budget = "100/10m"`` is a bucket of 100 tokens that refills continuously at
100 per 10 minutes. Each retry takes one token; an empty bucket means the failure goes to
``dead`` with reason ``retry_budget_exhausted`` instead of being retried, so one tenant's bad
batch cannot fill the pool with retries while everyone else's work waits.

Pure and integer: ``now_ms`` is passed in (monotonic milliseconds), and tokens are counted in
thousandths so the refill is exact integer arithmetic with no float drift.

Budgets live in memory: a restart refills every bucket. A daemon restarting in a loop could
thus retry more than the budget says; it would also be restarting, which the operator sees.
"""

from __future__ import annotations

from schedd.errors import InvalidArgument
from schedd.record import record

_MILLI = 1000


@record
class Rate:
    """``tokens`` per ``per_ms``; also the bucket's capacity (a burst of one full window)."""

    tokens: int
    per_ms: int

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.per_ms < 1:
            raise InvalidArgument(f"a rate needs tokens >= 1 and a period >= 1 ms, got {self}")


class TokenBucket:
    def __init__(self, rate: Rate, now_ms: int) -> None:
        self._rate = rate
        self._capacity = rate.tokens * _MILLI
        self._level = self._capacity
        self._at = now_ms

    def take(self, now_ms: int) -> bool:
        """Take one token if there is one."""
        self._refill(now_ms)
        if self._level < _MILLI:
            return False
        self._level -= _MILLI
        return True

    def available(self, now_ms: int) -> int:
        """Whole tokens left now."""
        self._refill(now_ms)
        return self._level // _MILLI

    def _refill(self, now_ms: int) -> None:
        elapsed = now_ms - self._at
        if elapsed <= 0:
            return
        gained = elapsed * self._rate.tokens * _MILLI // self._rate.per_ms
        if gained == 0:
            return  # keep _at, so slow refills are not lost to rounding
        self._level = min(self._capacity, self._level + gained)
        # Advance only by the time the whole milli-tokens cost, keeping the remainder.
        self._at += gained * self._rate.per_ms // (self._rate.tokens * _MILLI)
        if self._level == self._capacity:
            self._at = now_ms


class Budgets:
    """One bucket per tenant that has a budget; tenants without one are never limited."""

    def __init__(self, rates: dict[str, Rate], now_ms: int) -> None:
        self._buckets = {name: TokenBucket(rate, now_ms) for name, rate in rates.items()}

    def take(self, tenant: str | None, now_ms: int) -> bool:
        bucket = None if tenant is None else self._buckets.get(tenant)
        return bucket is None or bucket.take(now_ms)

    def available(self, now_ms: int) -> dict[str, int]:
        return {name: b.available(now_ms) for name, b in self._buckets.items()}
