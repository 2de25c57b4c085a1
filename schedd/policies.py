"""What a run's outcome means for its firing.

Kept apart from the runner so the rule is one pure function with one table of tests; retries,
budgets and quarantine (DESIGN §5) extend it here rather than inside the supervision code.
"""

from __future__ import annotations

from schedd.model import FiringState, RunOutcome


def firing_state_after(outcome: RunOutcome) -> FiringState:
    """The firing's next state once a run ended (no retries yet: a failure is final)."""
    if outcome is RunOutcome.SUCCEEDED:
        return FiringState.SUCCEEDED
    return FiringState.DEAD
