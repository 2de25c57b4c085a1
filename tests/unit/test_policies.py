"""after_run: the one table that decides retry, dead, cancelled or quarantine."""

from __future__ import annotations

import random

import pytest

from schedd.model import FiringState, Retry, RunOutcome
from schedd.policies import BUDGET_EXHAUSTED, QUARANTINE_CRASHES, after_run, backoff_cap_ms

NOW = 1_767_225_600_000
RETRY = Retry(max_attempts=5, base_ms=1_000, max_ms=10_000)


def verdict(
    outcome: RunOutcome,
    *,
    attempt: int = 1,
    crashes: int = 0,
    budget: bool = True,
    rand: float = 1.0,
    retry: Retry = RETRY,
) -> tuple[FiringState, int | None, str | None]:
    v = after_run(
        outcome,
        attempt=attempt,
        crashes=crashes,
        retry=retry,
        now_ms=NOW,
        take_budget=lambda: budget,
        rand=lambda: rand,
    )
    return v.state, v.retry_at_ms, v.reason


@pytest.mark.parametrize(
    ("outcome", "kw", "expected"),
    [
        (RunOutcome.SUCCEEDED, {}, (FiringState.SUCCEEDED, None, None)),
        (RunOutcome.CANCELLED, {}, (FiringState.CANCELLED, None, None)),
        (RunOutcome.FAILED, {}, (FiringState.FAILED, NOW + 1_000, None)),
        (RunOutcome.TIMEOUT, {"attempt": 2}, (FiringState.FAILED, NOW + 2_000, None)),
        (RunOutcome.RESOURCE_LIMIT, {"attempt": 3}, (FiringState.FAILED, NOW + 4_000, None)),
        # The first crash is retried like any failure ...
        (RunOutcome.CRASH, {"crashes": 1}, (FiringState.FAILED, NOW + 1_000, None)),
        # ... the second quarantines, however many attempts are left.
        (
            RunOutcome.CRASH,
            {"attempt": 2, "crashes": 2},
            (FiringState.QUARANTINED, None, "quarantined after 2 crashes"),
        ),
        # Timeouts and limits never count as crashes, whatever the stored count says.
        (RunOutcome.TIMEOUT, {"crashes": 5}, (FiringState.FAILED, NOW + 1_000, None)),
        (
            RunOutcome.FAILED,
            {"attempt": 5},
            (FiringState.DEAD, None, "gave up after 5 attempt(s) (failed)"),
        ),
        (RunOutcome.FAILED, {"budget": False}, (FiringState.DEAD, None, BUDGET_EXHAUSTED)),
        # A quarantine is decided before the budget is even asked.
        (
            RunOutcome.CRASH,
            {"crashes": 2, "budget": False},
            (FiringState.QUARANTINED, None, "quarantined after 2 crashes"),
        ),
    ],
)
def test_the_verdict_table(
    outcome: RunOutcome,
    kw: dict[str, object],
    expected: tuple[FiringState, int | None, str | None],
) -> None:
    assert verdict(outcome, **kw) == expected  # type: ignore[arg-type]


def test_quarantine_threshold_is_two_crashes() -> None:
    assert QUARANTINE_CRASHES == 2


def test_the_budget_is_spent_only_when_a_retry_would_be_scheduled() -> None:
    asked: list[int] = []

    def take() -> bool:
        asked.append(1)
        return True

    for outcome, attempt in [
        (RunOutcome.SUCCEEDED, 1),
        (RunOutcome.FAILED, 5),
        (RunOutcome.CANCELLED, 1),
    ]:
        after_run(
            outcome,
            attempt=attempt,
            crashes=0,
            retry=RETRY,
            now_ms=NOW,
            take_budget=take,
            rand=random.random,
        )
    assert asked == []


def test_backoff_caps_grow_exponentially_up_to_max() -> None:
    assert [backoff_cap_ms(RETRY, n) for n in range(1, 7)] == [
        1_000,
        2_000,
        4_000,
        8_000,
        10_000,
        10_000,
    ]
    assert backoff_cap_ms(Retry(max_attempts=1000, base_ms=1, max_ms=2**40), 500) == 2**40


def test_full_jitter_spreads_delays_over_the_whole_window() -> None:
    rng = random.Random(7)
    delays = [
        after_run(
            RunOutcome.FAILED,
            attempt=4,
            crashes=0,
            retry=RETRY,
            now_ms=NOW,
            take_budget=lambda: True,
            rand=rng.random,
        ).retry_at_ms
        for _ in range(2000)
    ]
    spread = [d - NOW for d in delays if d is not None]
    assert min(spread) >= 0
    assert max(spread) < 8_000
    # Full jitter: the draws cover the window, not just its top (as "equal jitter" would).
    assert min(spread) < 800
    assert max(spread) > 7_200
