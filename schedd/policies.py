"""What a run's outcome means for its firing: retry, dead, or quarantine (DESIGN §5).

One pure function, :func:`after_run`, with one table of tests, so the rule is read in one place
and the supervision code only carries it out. The order of the checks is the policy:

1. success ends the firing ``succeeded``;
2. schedd stopping it on purpose (overlap ``replace``) ends it ``cancelled``;
3. a **crash** that brings the firing's crash count to ``QUARANTINE_CRASHES`` (2) quarantines
   it, *whatever retry budget is left*: a task that segfaults will segfault again, and every
   retry costs a worker. Crashes are counted on the firing in the store, so a crash, a daemon
   restart and a second crash still quarantine;
4. with no attempts left the firing is ``dead``;
5. a retry costs one token of the tenant's budget; an empty bucket makes it ``dead`` with
   reason ``retry_budget_exhausted``;
6. otherwise it is ``failed`` with a retry scheduled after an exponential backoff with full
   jitter: attempt n (the one that just failed) waits ``uniform(0, min(max, base·2^(n-1)))``.
   Full jitter spreads the retries of a failed batch over the whole window instead of
   re-synchronising them into a new pulse (the "thundering herd" of plain exponential backoff).

The random draw is injected (``rand`` in ``[0, 1)``) so tests assert exact retry times.
"""

from __future__ import annotations

from collections.abc import Callable

from schedd.model import FiringState, Retry, RunOutcome
from schedd.record import record

QUARANTINE_CRASHES = 2
BUDGET_EXHAUSTED = "retry_budget_exhausted"


@record
class Verdict:
    state: FiringState
    #: Wall-clock ms of the next attempt when ``state`` is ``FAILED``.
    retry_at_ms: int | None = None
    #: Why the firing ends here, when that is not the run's own reason.
    reason: str | None = None


def backoff_cap_ms(retry: Retry, attempt: int) -> int:
    """The upper bound of the delay after attempt ``attempt`` (1-based) failed."""
    return min(retry.max_ms, retry.base_ms << min(attempt - 1, 62))


def after_run(
    outcome: RunOutcome,
    *,
    attempt: int,
    crashes: int,
    retry: Retry,
    now_ms: int,
    take_budget: Callable[[], bool],
    rand: Callable[[], float],
) -> Verdict:
    """The firing's next state once attempt ``attempt`` ended with ``outcome``.

    ``crashes`` includes this run's crash. ``take_budget`` is called only when a retry would
    otherwise be scheduled, and spends a token if it returns true.
    """
    if outcome is RunOutcome.SUCCEEDED:
        return Verdict(FiringState.SUCCEEDED)
    if outcome is RunOutcome.CANCELLED:
        return Verdict(FiringState.CANCELLED)
    if outcome is RunOutcome.CRASH and crashes >= QUARANTINE_CRASHES:
        return Verdict(FiringState.QUARANTINED, reason=f"quarantined after {crashes} crashes")
    if attempt >= retry.max_attempts:
        return Verdict(
            FiringState.DEAD, reason=f"gave up after {attempt} attempt(s) ({outcome.value})"
        )
    if not take_budget():
        return Verdict(FiringState.DEAD, reason=BUDGET_EXHAUSTED)
    delay = int(rand() * backoff_cap_ms(retry, attempt))
    return Verdict(FiringState.FAILED, retry_at_ms=now_ms + delay)
