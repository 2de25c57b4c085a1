"""Turning a due schedule into firings: the misfire and overlap decisions, as a pure function.

The dispatcher calls :func:`plan` inside the store's write transaction for every schedule whose
handle popped from the wheel. Given the schedule's marks and the wall clock it decides which
occurrences become firings, which are recorded as ``skipped``, and the new high-water mark.

Never early: a schedule whose ``next_due_ms`` is still ahead of the wall clock is left untouched
(``None``); the dispatcher re-arms it for the difference.

Misfire (DESIGN §5): the *due series* is every occurrence from ``next_fire_ms`` whose due time
(occurrence + stable jitter) has passed. Occurrences later than ``misfire_grace`` are *missed*;
the policy applies to them, while on-time ones fire normally:

* ``fire_once``: the missed series collapses into one firing, keyed by its latest occurrence;
* ``fire_all``: the latest ``max_catchup`` missed occurrences fire, older ones are ``skipped``;
* ``skip``: missed occurrences are recorded as ``skipped``.

A missed occurrence that fires is marked ``catchup``: the runner releases such firings through
the catch-up drain at a bounded rate, behind fresh work (DESIGN §5).

Recording is bounded: at most ``max_catchup`` skipped rows per plan (the rest are counted in the
reason of the last one), and scanning a long outage of a fast cron fast-forwards instead of
iterating millions of occurrences, so a week of downtime costs the same as an hour.

Overlap (``active`` = firings of the schedule committed or running now):

* ``skip`` (the default): while one is active, new occurrences are recorded ``skipped``;
* ``queue_one``: one more may wait behind the active one (the runner holds it until the
  active run ends); beyond that, occurrences are recorded ``skipped``;
* ``allow`` and ``replace`` commit every occurrence; for ``replace`` the runner stops the
  active run when the new one is about to start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schedd.keys import firing_key
from schedd.model import (
    FiringState,
    Misfire,
    OnceSpec,
    Overlap,
    Policies,
    ScheduleSpec,
    policies_from_json,
    trigger_from_json,
)
from schedd.record import record
from schedd.store.records import NewFiring, SchedulePlan, ScheduleRule
from schedd.triggers import Trigger, jitter_bound_ms, make_trigger, stable_jitter_ms

#: Past this many due occurrences a scan fast-forwards to the recent ones.
SCAN_LIMIT = 1000
#: Compiled rules kept by their JSON text; past this many distinct texts the cache starts over.
RULE_CACHE = 4096


@record
class CompiledRule:
    """What ``plan`` needs from a schedule's stored rule, parsed and validated once."""

    trigger: Trigger
    policies: Policies
    lane: str


def compile_rule(rule: Mapping[str, Any]) -> CompiledRule:
    return CompiledRule(
        make_trigger(trigger_from_json(rule["trigger"])),
        policies_from_json(rule["policies"]),
        str(rule.get("lane", "default")),
    )


_compiled: dict[str, CompiledRule] = {}


def compiled(rule: ScheduleRule) -> CompiledRule:
    """``rule``'s compiled form, from the cache when its JSON text is known.

    A pulse plans thousands of schedules that usually share a handful of rules: parsing each
    one's trigger and policies again per firing was a fifth of the dispatch transaction. The
    cache is keyed by the exact stored text, so a changed rule is a different key; triggers are
    immutable or, for cron, already shared (see :mod:`schedd.triggers`).
    """
    text = rule.rule_json
    if text is None:
        return compile_rule(rule.rule)
    found = _compiled.get(text)
    if found is None:
        if len(_compiled) >= RULE_CACHE:
            _compiled.clear()
        found = _compiled[text] = compile_rule(rule.rule)
    return found


@record
class Occurrences:
    """The due series of a schedule at one instant: what fires now, and what was missed."""

    missed: list[int]
    on_time: list[int]
    #: Missed occurrences not listed because the scan fast-forwarded past them.
    uncounted: int
    latest: int


def jitter_for(name: str, trigger: Trigger, jitter_ms: int | None) -> int:
    return stable_jitter_ms(name, jitter_bound_ms(trigger, jitter_ms))


def initial_marks(
    spec: ScheduleSpec, fired_through_ms: int | None, now_ms: int
) -> tuple[int | None, int | None]:
    """``(next_fire_ms, next_due_ms)`` for a schedule that was just added or changed.

    A new cron or interval schedule starts at its first occurrence from now (an occurrence at
    exactly ``now`` counts); a one-shot keeps its instant even if past, so the misfire policy
    decides its fate. Either way nothing at or before the high-water mark is produced again.
    """
    trigger = make_trigger(spec.trigger)
    floor = -(2**62) if isinstance(spec.trigger, OnceSpec) else now_ms - 1
    if fired_through_ms is not None:
        floor = max(floor, fired_through_ms)
    nxt = trigger.next_after(floor)
    if nxt is None:
        return None, None
    return nxt, nxt + jitter_for(spec.name, trigger, spec.jitter_ms)


def due_series(
    trigger: Trigger, first: int, *, jitter: int, grace_ms: int, now_ms: int
) -> Occurrences:
    """Every occurrence from ``first`` whose due time has passed, split into missed/on-time."""
    missed: list[int] = []
    on_time: list[int] = []
    uncounted = 0
    occ: int | None = first
    latest = first
    while occ is not None and occ + jitter <= now_ms:
        latest = occ
        (missed if now_ms - (occ + jitter) > grace_ms else on_time).append(occ)
        if len(missed) >= SCAN_LIMIT:
            # A long outage of a fast schedule: jump to shortly before the end of the missed
            # region, keep only the tail of what was listed, and estimate what was jumped over.
            period = trigger.period_hint_ms() or 1
            target = now_ms - jitter - grace_ms - 2 * period
            jump_to = trigger.next_after(target) if target > occ else None
            if jump_to is not None:
                keep = SCAN_LIMIT // 2
                uncounted += len(missed) - keep + max((jump_to - occ) // period - 1, 0)
                del missed[: len(missed) - keep]
                occ = jump_to
                continue
        occ = trigger.next_after(occ)
    return Occurrences(missed, on_time, uncounted, latest)


#: How many firings of a schedule may be active (committed or running) at once, per policy.
_OVERLAP_CAP = {Overlap.SKIP: 1, Overlap.QUEUE_ONE: 2}
_OVERLAP_REASON = {
    Overlap.SKIP: "overlap: previous run still going",
    Overlap.QUEUE_ONE: "overlap: a run is going and another is already queued",
}


def plan(rule: ScheduleRule, *, now_ms: int, active: int) -> SchedulePlan | None:
    """The plan for one due schedule, or ``None`` when it is not due (or paused, or done).

    Nearly every due schedule is the plain case: one occurrence, within its grace, the next
    one not due yet, and room under its overlap cap. That case is planned directly: the general
    scan (:func:`_plan_scanned`, which gives the same plan for it, as the tests check) was a
    fifth of a pulse's time per firing."""
    if rule.paused or rule.next_fire_ms is None or rule.next_due_ms is None:
        return None
    if rule.next_due_ms > now_ms:
        return None
    c = compiled(rule)
    first, due = rule.next_fire_ms, rule.next_due_ms
    jitter = due - first
    nxt = c.trigger.next_after(first)
    cap = _OVERLAP_CAP.get(c.policies.overlap)
    if (
        now_ms - due <= c.policies.misfire_grace_ms
        and (nxt is None or nxt + jitter > now_ms)
        and (cap is None or active < cap)
    ):
        firing = _firing(rule, c, first, jitter, FiringState.COMMITTED)
        return SchedulePlan((firing,), first, nxt, None if nxt is None else nxt + jitter)
    return _plan_scanned(rule, c, first, jitter, now_ms=now_ms, active=active)


def _plan_scanned(
    rule: ScheduleRule, c: CompiledRule, first: int, jitter: int, *, now_ms: int, active: int
) -> SchedulePlan:
    """The plan of a due schedule from the scan of every occurrence due from ``first`` (its
    next occurrence), with its misfires and overlap."""
    policies = c.policies
    series = due_series(
        c.trigger,
        first,
        jitter=jitter,
        grace_ms=policies.misfire_grace_ms,
        now_ms=now_ms,
    )
    if series.missed or series.uncounted:
        to_fire, to_skip, note = _apply_misfire(series, policies)
    else:  # the usual case: nothing was missed, so there is no misfire note to write
        to_fire, to_skip, note = series.on_time, [], None
    missed = set(series.missed)

    def firing(occ: int, state: FiringState, reason: str | None) -> NewFiring:
        return _firing(rule, c, occ, jitter, state, reason, catchup=occ in missed)

    firings = [firing(o, FiringState.SKIPPED, note) for o in to_skip]
    cap = _OVERLAP_CAP.get(policies.overlap)
    collapsed = (
        series.missed[-1] if series.missed and policies.misfire is Misfire.FIRE_ONCE else None
    )
    for occ in to_fire:
        if cap is not None and active >= cap:
            firings.append(firing(occ, FiringState.SKIPPED, _OVERLAP_REASON[policies.overlap]))
        else:
            firings.append(firing(occ, FiringState.COMMITTED, note if occ == collapsed else None))
            active += 1
    nxt = c.trigger.next_after(series.latest)
    return SchedulePlan(
        firings=tuple(firings),
        fired_through_ms=series.latest,
        next_fire_ms=nxt,
        next_due_ms=None if nxt is None else nxt + jitter,
    )


def _firing(
    rule: ScheduleRule,
    c: CompiledRule,
    occ: int,
    jitter: int,
    state: FiringState,
    reason: str | None = None,
    *,
    catchup: bool = False,
) -> NewFiring:
    return NewFiring(
        key=firing_key(rule.name, occ),
        schedule_id=rule.id,
        schedule=rule.name,
        scheduled_for_ms=occ,
        due_ms=occ + jitter,
        state=state,
        payload_id=rule.payload_id,
        lane=c.lane,
        reason=reason,
        catchup=catchup,
    )


def _apply_misfire(series: Occurrences, policies: Policies) -> tuple[list[int], list[int], str]:
    """``(fire, skip, reason for the skipped)`` under the schedule's misfire policy."""
    missed, cap = series.missed, max(policies.max_catchup, 0)
    n_missed = len(missed) + series.uncounted
    approx = "about " if series.uncounted else ""
    note = f"misfire: {approx}{n_missed} occurrence(s) missed their grace"
    match policies.misfire:
        case Misfire.FIRE_ONCE:
            return missed[-1:] + series.on_time, [], note
        case Misfire.FIRE_ALL:
            fire = missed[-cap:] if cap else []
            rest = missed[: len(missed) - len(fire)]
            return fire + series.on_time, rest[-cap:] if cap else [], note
        case Misfire.SKIP:
            return series.on_time, missed[-cap:] if cap else [], note
