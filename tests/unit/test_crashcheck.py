"""The crash checker against hand-made histories: a correct one passes, each broken rule is named.

A judge that never complains proves nothing, so every rule gets a history that breaks it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.crashcheck import (
    DaemonKill,
    FiringRow,
    RunRow,
    ScheduleRow,
    StoreRows,
    WorkerKill,
    check,
    parse_probe,
)

EVERY = ScheduleRow("tick", 100, 0, None, 1_000, 1_200)
ONCE = ScheduleRow("once", None, 0, 1_050, 900, 1_050)
DUE_BY = 1_200


def firing(key: str, sched: str, at: int, state: str = "succeeded", attempt: int = 1) -> FiringRow:
    return FiringRow(key, sched, at, state, attempt)


def good() -> tuple[StoreRows, list[str]]:
    """tick fires at 1000, 1100, 1200; once at 1050; each ran once, on time, in order."""
    firings = [firing(f"tick@{t}", "tick", t) for t in (1_000, 1_100, 1_200)]
    firings.append(firing("once@1050", "once", 1_050))
    runs = [
        RunRow(f.key, 1, "succeeded", 10 + i, f.scheduled_for_ms + 1) for i, f in enumerate(firings)
    ]
    probe = []
    for r in runs:
        probe.append(f"{r.key} 1 {r.pid} {r.started_ms + 1} -")
        probe.append(f"{r.key} 1 {r.pid} {r.started_ms + 1} {r.started_ms + 5}")
    return StoreRows([EVERY, ONCE], firings, runs), probe


def with_firings(store: StoreRows, firings: list[FiringRow]) -> StoreRows:
    return replace(store, firings=firings)


def test_a_correct_history_passes() -> None:
    store, probe = good()
    assert check(store, probe, [], due_by_ms=DUE_BY) == []


def test_parse_probe_merges_start_and_end_and_names_garbage() -> None:
    runs, bad = parse_probe(["k 1 5 10 -", "k 1 5 10 20", "k 2 6 30 -", "torn line"])
    assert sorted((r.attempt, r.end_ms) for r in runs) == [(1, 20), (2, None)]
    assert bad == ["malformed probe line 'torn line'"]


def test_a_due_occurrence_without_a_firing_is_missing() -> None:
    store, probe = good()
    store = with_firings(store, [f for f in store.firings if f.key != "tick@1100"])
    problems = check(store, [p for p in probe if "tick@1100" not in p], [], due_by_ms=DUE_BY)
    assert any("have no firing: [1100]" in p for p in problems), problems


def test_a_firing_left_unfinished_is_reported() -> None:
    store, probe = good()
    store = with_firings(store, [replace(store.firings[0], state="committed")])
    assert any("left committed" in p for p in check(store, probe[:2], [], due_by_ms=1_000))


def test_a_firing_beyond_the_high_water_mark_or_off_the_grid_is_reported() -> None:
    store, _ = good()
    extra = [firing("tick@1300", "tick", 1_300), firing("tick@1150", "tick", 1_150)]
    problems = check(with_firings(store, [*store.firings, *extra]), [], [], due_by_ms=DUE_BY)
    assert any("tick@1300: beyond" in p for p in problems), problems
    assert any("tick@1150: not an occurrence" in p for p in problems), problems


def test_two_firings_of_one_occurrence_are_reported() -> None:
    store, _ = good()
    twin = firing("tick@1100-again", "tick", 1_100)
    problems = check(with_firings(store, [*store.firings, twin]), [], [], due_by_ms=DUE_BY)
    assert any("occurrence 1100 has 2 firings" in p for p in problems), problems


def test_a_task_started_before_its_instant_is_early() -> None:
    store, probe = good()
    probe += ["tick@1100 1 11 1099 -"]
    problems = check(store, probe, [], due_by_ms=DUE_BY)
    assert any("before its instant" in p for p in problems), problems


def test_a_run_row_started_before_its_instant_is_early() -> None:
    store, probe = good()
    store = replace(store, runs=[replace(store.runs[0], started_ms=999), *store.runs[1:]])
    assert any("run recorded started 999" in p for p in check(store, probe, [], due_by_ms=DUE_BY))


def test_a_duplicate_run_is_allowed_only_when_in_flight_at_a_kill() -> None:
    store, probe = good()
    key = "tick@1100"
    store = with_firings(
        store, [replace(f, attempt=2) if f.key == key else f for f in store.firings]
    )
    store = replace(
        store,
        runs=[
            *(r for r in store.runs if r.key != key),
            RunRow(key, 1, "lost", 11, 1_101),
            RunRow(key, 2, "succeeded", 21, 1_150),
        ],
    )
    probe = [p for p in probe if key not in p] + [f"{key} 1 11 1102 -", f"{key} 2 21 1151 1160"]
    kill = DaemonKill(
        1_120,
        {"tick": 1_100, "once": 1_050},
        {key: "running", "tick@1000": "succeeded", "once@1050": "succeeded"},
    )
    assert check(store, probe, [kill], due_by_ms=DUE_BY) == []
    unexplained = check(store, probe, [], due_by_ms=DUE_BY)
    assert any("not in flight at a kill" in p for p in unexplained), unexplained
    assert any("lost without a daemon kill" in p for p in unexplained), unexplained


def test_a_task_that_vanished_mid_way_needs_a_kill_to_explain_it() -> None:
    store, probe = good()
    problems = check(store, [*probe, "tick@1200 2 50 1300 -"], [], due_by_ms=DUE_BY)
    assert any("tick@1200 attempt 2 (pid 50): the task died mid-way" in p for p in problems)


def test_a_retry_after_a_failure_is_not_a_duplicate() -> None:
    store, probe = good()
    key = "tick@1000"
    store = replace(store, runs=[*store.runs, RunRow(key, 2, "succeeded", 30, 1_100)])
    store = with_firings(
        store, [replace(f, attempt=2) if f.key == key else f for f in store.firings]
    )
    store = replace(
        store,
        runs=[
            replace(r, state="failed") if (r.key, r.attempt) == (key, 1) else r for r in store.runs
        ],
    )
    probe += [f"{key} 2 30 1101 -", f"{key} 2 30 1101 1105"]
    assert check(store, probe, [], due_by_ms=DUE_BY) == []


def test_the_same_attempt_running_twice_is_a_refire() -> None:
    store, probe = good()
    probe += ["tick@1000 1 99 1500 -", "tick@1000 1 99 1500 1501"]
    problems = check(store, probe, [], due_by_ms=DUE_BY)
    assert any("one attempt ran more than once" in p for p in problems), problems


def test_overlapping_runs_of_one_key_are_reported() -> None:
    store, probe = good()
    key = "tick@1000"
    store = replace(store, runs=[*store.runs, RunRow(key, 2, "succeeded", 30, 1_003)])
    probe += [f"{key} 2 30 1003 -", f"{key} 2 30 1003 1010"]  # attempt 1 ran 1002..1006
    kill = DaemonKill(1_004, {"tick": 1_000}, {key: "running"})
    problems = check(store, probe, [kill], due_by_ms=DUE_BY)
    assert any("while attempt 1 ran until 1006" in p for p in problems), problems


def test_an_occurrence_at_or_before_the_high_water_mark_must_not_reappear_after_a_kill() -> None:
    store, probe = good()
    kill = DaemonKill(
        1_150, {"tick": 1_100, "once": 1_050}, {"tick@1000": "succeeded", "once@1050": "succeeded"}
    )
    problems = check(store, probe, [kill], due_by_ms=DUE_BY)
    assert any("tick@1100: created after the kill" in p for p in problems), problems


def test_a_final_firing_that_runs_again_after_a_kill_is_a_refire() -> None:
    store, probe = good()
    states = {f.key: f.state for f in store.firings}
    kill = DaemonKill(1_300, {"tick": 1_200, "once": 1_050}, states)
    probe += ["once@1050 2 77 1400 -", "once@1050 2 77 1400 1401"]
    problems = check(store, probe, [kill], due_by_ms=DUE_BY)
    assert any("once@1050: ran again (attempt 2) after it was succeeded" in p for p in problems)


def test_a_high_water_mark_moving_back_is_reported() -> None:
    store, probe = good()
    states = {f.key: f.state for f in store.firings}
    kill = DaemonKill(1_300, {"tick": 1_400, "once": 1_050}, states)
    problems = check(store, probe, [kill], due_by_ms=DUE_BY)
    assert any("moved back from 1400 to 1200" in p for p in problems), problems


def test_a_killed_worker_must_be_recorded_as_a_crash() -> None:
    store, probe = good()
    problems = check(store, probe, [WorkerKill("tick@1000", 1)], due_by_ms=DUE_BY)
    assert any("killed task recorded as succeeded" in p for p in problems), problems
    assert any("succeeded although its last attempt was killed" in p for p in problems)


def test_a_recorded_success_needs_the_task_to_have_finished_as_that_process() -> None:
    store, probe = good()
    cut = [p for p in probe if not (p.startswith("tick@1000") and not p.endswith("-"))]
    problems = check(store, cut, [], due_by_ms=DUE_BY)
    assert any("never reached its end" in p for p in problems), problems
    other_pid = [p.replace("tick@1000 1 10", "tick@1000 1 99") for p in probe]
    problems = check(store, other_pid, [], due_by_ms=DUE_BY)
    assert any("recorded pid 10" in p for p in problems), problems


@pytest.mark.parametrize("line", ["k 1 2 3", "k x 2 3 -", "k 1 2 3 4 5"])
def test_malformed_probe_lines_are_problems(line: str) -> None:
    store, probe = good()
    assert check(store, [*probe, line], [], due_by_ms=DUE_BY) == [f"malformed probe line {line!r}"]
