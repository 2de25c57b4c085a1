"""Token buckets for tenant retry budgets, driven by explicit milliseconds."""

from __future__ import annotations

import pytest

from schedd.errors import InvalidArgument
from schedd.ratelimit import Budgets, Rate, TokenBucket

MIN10 = 600_000


def test_a_full_bucket_allows_a_burst_of_its_capacity_then_refuses() -> None:
    bucket = TokenBucket(Rate(100, MIN10), now_ms=0)
    assert all(bucket.take(0) for _ in range(100))
    assert not bucket.take(0)


def test_tokens_come_back_at_the_rate_even_when_asked_often() -> None:
    bucket = TokenBucket(Rate(100, MIN10), now_ms=0)
    for _ in range(100):
        bucket.take(0)
    # One token per 6 s; asking every millisecond must not lose the fractions to rounding.
    granted = sum(bucket.take(ms) for ms in range(1, 60_001))
    assert granted == 10


def test_refill_stops_at_capacity() -> None:
    bucket = TokenBucket(Rate(3, 1_000), now_ms=0)
    assert bucket.available(10_000_000) == 3


def test_budgets_limit_only_tenants_that_have_one() -> None:
    budgets = Budgets({"batch": Rate(1, MIN10)}, now_ms=0)
    assert budgets.take("batch", 0)
    assert not budgets.take("batch", 1)
    assert all(budgets.take("web", 1) for _ in range(1000))
    assert all(budgets.take(None, 1) for _ in range(1000))
    assert budgets.available(1) == {"batch": 0}


@pytest.mark.parametrize(("tokens", "per_ms"), [(0, 1000), (5, 0)])
def test_a_rate_must_be_positive(tokens: int, per_ms: int) -> None:
    with pytest.raises(InvalidArgument):
        Rate(tokens, per_ms)
