"""The crash harness's judge: one pure function over what the store and the tasks left behind.

The harness kills the daemon at random moments; the verdict must not depend on which moments.
So the judge sees only facts: the store's rows read after the last stop, the lines tasks
appended to a probe log (the task's own account, written outside the daemon, so a run the store
forgot still shows), and for each daemon kill a snapshot of the store taken while the daemon was
dead (which firings were in flight then, and how far each schedule had fired). Being pure, each
rule is unit-tested with hand-made rows that break it (``tests/unit/test_crashcheck.py``).

The probe log format, one line per event, is ``key attempt pid start_ms end_ms``: written once
with ``-`` as ``end_ms`` before the task's work and once with both times after it, so a task
killed mid-way leaves only its start line.

Schedules are matched to their firings by ``(schedule, scheduled_for_ms)``, not by formatting
keys, so a change in the key format cannot make the judge agree with a bug.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FINAL = frozenset({"succeeded", "dead", "quarantined", "skipped", "cancelled"})
IN_FLIGHT = frozenset({"committed", "running"})
#: Run outcomes after which the policy may start another attempt of the same key.
RETRYABLE = frozenset({"failed", "timeout", "resource_limit", "crash"})
#: Run outcomes of a task that may have died before writing its end line.
KILLED = frozenset({"crash", "lost", "timeout", "cancelled"})


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    #: An interval schedule: occurrences at ``anchor_ms + k * every_ms``.
    every_ms: int | None
    anchor_ms: int
    #: A one-shot schedule's instant.
    at_ms: int | None
    created_ms: int
    fired_through_ms: int | None


@dataclass(frozen=True)
class FiringRow:
    key: str
    schedule: str
    scheduled_for_ms: int
    state: str
    attempt: int


@dataclass(frozen=True)
class RunRow:
    key: str
    attempt: int
    state: str
    pid: int | None
    started_ms: int


@dataclass(frozen=True)
class StoreRows:
    schedules: Sequence[ScheduleRow]
    firings: Sequence[FiringRow]
    runs: Sequence[RunRow]


@dataclass(frozen=True)
class DaemonKill:
    """The daemon was SIGKILLed at ``at_ms``; the store as it was left, read before restart."""

    at_ms: int
    fired_through: Mapping[str, int | None]
    #: Every firing key that existed, with its state.
    states: Mapping[str, str]

    def in_flight(self, key: str) -> bool:
        return self.states.get(key) in IN_FLIGHT


@dataclass(frozen=True)
class WorkerKill:
    """The test SIGKILLed the task process of ``key``'s attempt ``attempt``."""

    key: str
    attempt: int


Kill = DaemonKill | WorkerKill


@dataclass(frozen=True)
class ProbeRun:
    key: str
    attempt: int
    pid: int
    start_ms: int
    end_ms: int | None


def parse_probe(lines: Sequence[str]) -> tuple[list[ProbeRun], list[str]]:
    """The runs the probe log describes (start and end lines merged), and its malformed lines."""
    runs: dict[tuple[str, int, int], ProbeRun] = {}
    bad: list[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) != 5 or not all(p.isdigit() for p in parts[1:4]):
            bad.append(f"malformed probe line {line!r}")
            continue
        key, attempt, pid, start = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        end = None if parts[4] == "-" else int(parts[4])
        ident = (key, attempt, pid)
        known = runs.get(ident)
        if known is not None and known.end_ms is not None:
            end = known.end_ms
        runs[ident] = ProbeRun(key, attempt, pid, start, end)
    return list(runs.values()), bad


def check(
    store: StoreRows, probe_lines: Sequence[str], kills: Sequence[Kill], *, due_by_ms: int
) -> list[str]:
    """Every broken guarantee, one line each; empty when the run was correct.

    ``due_by_ms``: every occurrence due at or before it must have a firing (the test stopped
    producing firings after it, by pausing the schedules).
    """
    probe, problems = parse_probe(probe_lines)
    daemon_kills = sorted((k for k in kills if isinstance(k, DaemonKill)), key=lambda k: k.at_ms)
    firings = {f.key: f for f in store.firings}
    runs = {(r.key, r.attempt): r for r in store.runs}
    probes: dict[str, list[ProbeRun]] = defaultdict(list)
    for p in probe:
        probes[p.key].append(p)
    problems += _occurrences(store, due_by_ms)
    problems += _firings(store.firings)
    problems += _runs(store.runs, firings, probes, daemon_kills)
    for key, key_probes in probes.items():
        problems += _probes(key, key_probes, firings.get(key), runs, daemon_kills)
    problems += _kills(store, daemon_kills, probes)
    problems += _worker_kills([k for k in kills if isinstance(k, WorkerKill)], firings, runs)
    return problems


def _occurrences(store: StoreRows, due_by_ms: int) -> list[str]:
    """None missing, none invented: the firings of each schedule are exactly its due series."""
    problems: list[str] = []
    have: dict[tuple[str, int], int] = defaultdict(int)
    for f in store.firings:
        have[(f.schedule, f.scheduled_for_ms)] += 1
    for (name, occ), n in have.items():
        if n > 1:
            problems.append(f"{name}: occurrence {occ} has {n} firings")
    for s in store.schedules:
        if s.at_ms is not None:
            expected = [s.at_ms] if s.at_ms <= due_by_ms else []
        elif s.every_ms is not None:
            first = (
                s.anchor_ms + max(0, -(-(s.created_ms - s.anchor_ms) // s.every_ms)) * s.every_ms
            )
            expected = list(range(first, due_by_ms + 1, s.every_ms))
        else:
            continue
        missing = [o for o in expected if (s.name, o) not in have]
        if missing:
            problems.append(
                f"{s.name}: {len(missing)} due occurrence(s) have no firing: {missing[:5]}"
            )
        hwm = s.fired_through_ms
        for f in store.firings:
            if f.schedule != s.name:
                continue
            if hwm is None or f.scheduled_for_ms > hwm:
                problems.append(f"{f.key}: beyond its schedule's high-water mark {hwm}")
            if s.every_ms is not None and (f.scheduled_for_ms - s.anchor_ms) % s.every_ms:
                problems.append(f"{f.key}: not an occurrence of every {s.every_ms} ms")
    return problems


def _firings(rows: Sequence[FiringRow]) -> list[str]:
    return [f"{f.key}: left {f.state} (attempt {f.attempt})" for f in rows if f.state not in FINAL]


def _runs(
    rows: Sequence[RunRow],
    firings: Mapping[str, FiringRow],
    probes: Mapping[str, list[ProbeRun]],
    kills: Sequence[DaemonKill],
) -> list[str]:
    problems: list[str] = []
    for r in rows:
        firing = firings.get(r.key)
        name = f"{r.key} attempt {r.attempt}"
        if firing is None:
            problems.append(f"{name}: a run of no firing")
            continue
        if r.started_ms < firing.scheduled_for_ms:
            problems.append(f"{name}: run recorded started {r.started_ms}, before its instant")
        if r.state == "running":
            problems.append(f"{name}: run left running")
        if r.state == "lost" and not any(k.in_flight(r.key) for k in kills):
            problems.append(f"{name}: run lost without a daemon kill while it was in flight")
        ran = [p for p in probes.get(r.key, []) if p.attempt == r.attempt]
        if r.state in ("succeeded", "failed") and not any(p.end_ms is not None for p in ran):
            problems.append(f"{name}: recorded {r.state} but the task never reached its end")
        if r.pid is not None and ran and all(p.pid != r.pid for p in ran):
            problems.append(f"{name}: recorded pid {r.pid}, the task ran as {[p.pid for p in ran]}")
    return problems


def _probes(
    key: str,
    runs_of_key: list[ProbeRun],
    firing: FiringRow | None,
    runs: Mapping[tuple[str, int], RunRow],
    kills: Sequence[DaemonKill],
) -> list[str]:
    """What the tasks saw: never early, never overlapping, repeated only for a reason."""
    if firing is None:
        return [f"{key}: a task ran for a key the store does not know"]
    problems: list[str] = []
    in_flight_at_kill = any(k.in_flight(key) for k in kills)
    ordered = sorted(runs_of_key, key=lambda p: (p.start_ms, p.attempt))
    attempts = [p.attempt for p in ordered]
    if len(set(attempts)) != len(attempts):
        problems.append(f"{key}: one attempt ran more than once: attempts {attempts}")
    for i, p in enumerate(ordered):
        name = f"{key} attempt {p.attempt} (pid {p.pid})"
        if p.start_ms < firing.scheduled_for_ms:
            problems.append(f"{name}: started {p.start_ms}, before its instant")
        for earlier in ordered[:i]:
            if earlier.end_ms is not None and p.start_ms < earlier.end_ms:
                problems.append(
                    f"{name}: started at {p.start_ms} while attempt {earlier.attempt}"
                    f" ran until {earlier.end_ms}"
                )
        run = runs.get((key, p.attempt))
        if p.end_ms is None and not in_flight_at_kill and (run is None or run.state not in KILLED):
            problems.append(f"{name}: the task died mid-way with no kill to explain it")
        is_last = p.attempt == max(attempts)
        retried = run is not None and run.state in RETRYABLE
        if not is_last and not retried and not in_flight_at_kill:
            problems.append(f"{name}: ran again as a duplicate, but was not in flight at a kill")
    return problems


def _kills(
    store: StoreRows, kills: Sequence[DaemonKill], probes: Mapping[str, list[ProbeRun]]
) -> list[str]:
    """Across restarts: high-water marks only move forward, and nothing behind one re-fires."""
    problems: list[str] = []
    final_marks = {s.name: s.fired_through_ms for s in store.schedules}
    snapshots = [k.fired_through for k in kills] + [final_marks]
    for before, after in itertools.pairwise(snapshots):
        for name, mark in before.items():
            later = after.get(name)
            if mark is not None and (later is None or later < mark):
                problems.append(f"{name}: high-water mark moved back from {mark} to {later}")
    for kill in kills:
        for f in store.firings:
            mark = kill.fired_through.get(f.schedule)
            if mark is not None and f.scheduled_for_ms <= mark and f.key not in kill.states:
                problems.append(
                    f"{f.key}: created after the kill at {kill.at_ms} although at or before"
                    f" the high-water mark {mark}"
                )
        for key, state in kill.states.items():
            if state in FINAL:
                problems.extend(
                    f"{key}: ran again (attempt {p.attempt}) after it was {state}"
                    for p in probes.get(key, [])
                    if p.start_ms > kill.at_ms
                )
    return problems


def _worker_kills(
    kills: Sequence[WorkerKill],
    firings: Mapping[str, FiringRow],
    runs: Mapping[tuple[str, int], RunRow],
) -> list[str]:
    """A killed task is a crash, and its firing follows the crash policy (retry or quarantine)."""
    problems: list[str] = []
    for k in kills:
        run = runs.get((k.key, k.attempt))
        if run is None or run.state not in ("crash", "lost"):
            got = "no run" if run is None else run.state
            problems.append(f"{k.key} attempt {k.attempt}: killed task recorded as {got}")
        firing = firings.get(k.key)
        if firing is not None and firing.attempt == k.attempt and firing.state == "succeeded":
            problems.append(f"{k.key}: succeeded although its last attempt was killed")
    return problems
