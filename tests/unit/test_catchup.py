"""The catch-up drain's controller: token release and AIMD, exact on integer milliseconds."""

from __future__ import annotations

import pytest

from schedd.catchup import CatchupDrain, CatchupSettings
from schedd.model import RunOutcome

OK, FAIL = RunOutcome.SUCCEEDED, RunOutcome.FAILED


def drain(**kw: float) -> CatchupDrain:
    return CatchupDrain(CatchupSettings(**kw), now_ms=0)  # type: ignore[arg-type]


def test_a_new_backlog_has_one_seconds_burst_then_accrues_at_the_rate() -> None:
    d = drain(rate=10)
    assert d.available(0) == 10, "a few collapsed firings after a restart go out at once"
    d.take(10)
    assert d.available(0) == 0
    assert d.next_token_ms(0) == 100, "the next token is due a tenth of a second later"
    assert d.available(99) == 0
    assert d.available(100) == 1
    assert d.available(10_000) == 10, "an idle spell banks at most one second's worth"


def test_a_slow_rate_releases_one_firing_per_period() -> None:
    d = drain(rate=0.5, min_rate=0.5)
    assert d.available(0) == 1, "the burst is at least one firing"
    d.take(1)
    assert d.next_token_ms(0) == 2000
    assert d.available(1999) == 0
    assert d.available(2000) == 1


def test_a_window_over_the_failure_ratio_halves_the_rate_down_to_its_floor() -> None:
    d = drain(rate=8, min_rate=3, window=4, max_failure_ratio=0.5)
    changes = [d.observe(o) for o in (FAIL, FAIL, FAIL, OK)]
    assert changes[:3] == [None, None, None], "a decision waits for a full window"
    assert changes[3] is not None
    assert "halved 8 -> 4/s" in changes[3]
    assert d.rate == 4
    for o in (FAIL, FAIL, FAIL, FAIL):
        d.observe(o)
    assert d.rate == 3, "never below min_rate"
    assert d.halvings == 2


def test_a_window_at_the_ratio_adds_the_step_up_to_the_ceiling() -> None:
    d = drain(rate=10, step=5, max_rate=18, window=2, max_failure_ratio=0.5)
    d.observe(OK)
    assert d.observe(FAIL) is not None, "exactly at the ratio is acceptable: the rate grows"
    assert d.rate == 15
    d.observe(OK)
    d.observe(OK)
    assert d.rate == 18, "never above max_rate"
    d.observe(OK)
    assert d.observe(OK) is None, "no change at the ceiling, no log line"
    assert d.increases == 3


def test_runs_schedd_stopped_or_lost_are_no_evidence() -> None:
    d = drain(rate=10, window=2)
    for o in (RunOutcome.CANCELLED, RunOutcome.LOST, RunOutcome.CANCELLED):
        assert d.observe(o) is None
    assert (d.halvings, d.increases) == (0, 0)
    d.observe(RunOutcome.TIMEOUT)
    d.observe(RunOutcome.CRASH)
    assert d.rate == 5, "timeouts and crashes are failures"


def test_reset_restores_the_configured_rate_and_forgets_the_evidence() -> None:
    d = drain(rate=10, window=2)
    d.observe(FAIL)
    d.observe(FAIL)
    assert d.rate == 5
    d.observe(FAIL)
    d.reset(5_000)
    assert d.rate == 10
    assert d.available(5_000) == 10
    d.observe(OK)
    d.observe(OK)
    assert d.rate == 20, "the failure before the reset did not count towards this window"


def test_the_time_to_drain_follows_the_current_rate() -> None:
    d = drain(rate=4)
    assert d.eta_ms(0) is None
    assert d.eta_ms(10) == 2500


@pytest.mark.parametrize(
    "kw",
    [{"rate": 1, "min_rate": 2}, {"rate": 5, "max_rate": 4}, {"rate": 0, "min_rate": 0}],
)
def test_inconsistent_rates_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="min_rate <= rate <= max_rate"):
        CatchupSettings(**kw)  # type: ignore[arg-type]
