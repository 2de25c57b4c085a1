"""The lane allocation policy (``schedd.lanes``) and the ``[lanes.NAME]`` / ``lane`` config keys."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest

from schedd.config import Config, parse_config
from schedd.config import schema as config_schema
from schedd.config.api import api_lane, api_task
from schedd.errors import ConfigError, InvalidArgument
from schedd.lanes import DEFAULT_LANE, Allocator, Lane, Start

ETC = Path("/etc/schedd")
HEAD = '[daemon]\nstate_dir = "state"\n'
REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def fill(alloc: Allocator, waiting: Counter[str]) -> list[Start]:
    """Start firings until the allocator says no; the starts, in order."""
    started = []
    while (start := alloc.next([n for n, q in waiting.items() if q > 0])) is not None:
        waiting[start.lane] -= 1
        started.append(start)
    return started


def lanes_of(starts: list[Start]) -> list[str]:
    return [s.lane for s in starts]


# --- reservations -------------------------------------------------------------------------------


def test_a_reservation_is_never_lent_to_another_lane() -> None:
    alloc = Allocator({"critical": Lane(reserved=2)}, capacity=4)
    assert lanes_of(fill(alloc, Counter(bulk=0, default=50))) == ["default"] * 2
    assert alloc.next(["default"]) is None, "the two reserved slots stay idle"


def test_a_lane_under_its_reservation_gets_the_next_slot_of_its_own() -> None:
    alloc = Allocator({"critical": Lane(reserved=1), "bulk": Lane(weight=100)}, capacity=3)
    waiting = Counter(bulk=50)
    assert lanes_of(fill(alloc, waiting)) == ["bulk", "bulk"]
    waiting["critical"] = 1
    [start] = fill(alloc, waiting)
    assert start == Start("critical", shared=False), "bulk is saturated, critical starts at once"
    alloc.finished(start)
    assert alloc.next(["bulk", "critical"]) == start, "its own slot, whatever bulk's weight"


def test_a_lane_beyond_its_reservation_competes_for_the_shared_slots() -> None:
    alloc = Allocator({"critical": Lane(reserved=1), "bulk": Lane()}, capacity=3)
    starts = fill(alloc, Counter(critical=50))
    assert [s.shared for s in starts] == [False, True, True], "its slot, then both shared"
    assert alloc.running("critical") == 3


def test_a_single_lane_uses_every_slot_the_others_did_not_reserve() -> None:
    alloc = Allocator({"a": Lane(reserved=1), "b": Lane(reserved=2), "c": Lane()}, capacity=10)
    assert lanes_of(fill(alloc, Counter(c=100))) == ["c"] * 7


def test_reservations_beyond_capacity_are_refused() -> None:
    with pytest.raises(ValueError, match="reserve 5 slots, more than the 4"):
        Allocator({"a": Lane(reserved=3), "b": Lane(reserved=2)}, capacity=4)


def test_an_unknown_lane_runs_in_default_which_always_exists() -> None:
    alloc = Allocator({"critical": Lane(reserved=1)}, capacity=2)
    assert alloc.lane_of("critical") == "critical"
    assert alloc.lane_of("removed-since") == DEFAULT_LANE
    assert alloc.next([DEFAULT_LANE]) == Start(DEFAULT_LANE, shared=True)


# --- weights ------------------------------------------------------------------------------------


def saturated(alloc: Allocator, lanes: list[str], picks: int, seed: int) -> Counter[str]:
    """Starts per lane while every lane always has work; runs end in a random order."""
    rng = random.Random(seed)
    running: list[Start] = []
    starts: Counter[str] = Counter()
    while sum(starts.values()) < picks:
        while (start := alloc.next(lanes)) is not None:
            running.append(start)
            starts[start.lane] += 1
        alloc.finished(running.pop(rng.randrange(len(running))))
    return starts


def test_one_shared_slot_alternates_exactly_by_weight() -> None:
    alloc = Allocator({"a": Lane(weight=3), "b": Lane(weight=1)}, capacity=1)
    order = saturated(alloc, ["a", "b"], 400, seed=1)
    assert order == Counter(a=300, b=100)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("capacity", [2, 4, 7])
def test_saturated_lanes_start_in_proportion_to_their_weights(seed: int, capacity: int) -> None:
    alloc = Allocator({"a": Lane(weight=3), "b": Lane(weight=1), "c": Lane(weight=2)}, capacity)
    starts = saturated(alloc, ["a", "b", "c"], 6_000, seed)
    for lane, weight in [("a", 3), ("b", 1), ("c", 2)]:
        assert abs(starts[lane] - 1_000 * weight) <= capacity, starts


def test_a_small_weight_is_not_starved_on_few_slots() -> None:
    """On two slots, "pick the least occupied by weight" would never give b a slot."""
    alloc = Allocator({"a": Lane(weight=3), "b": Lane(weight=1)}, capacity=2)
    assert saturated(alloc, ["a", "b"], 40, seed=3)["b"] >= 9


def test_an_idle_lanes_share_goes_to_the_others() -> None:
    alloc = Allocator({"a": Lane(weight=3), "b": Lane(weight=1)}, capacity=4)
    assert saturated(alloc, ["b"], 100, seed=0) == Counter(b=100)


def test_idleness_banks_no_credit() -> None:
    alloc = Allocator({"a": Lane(weight=1), "b": Lane(weight=1)}, capacity=1)
    saturated(alloc, ["b"], 100, seed=0)
    alloc.finished(Start("b", shared=True))
    starts = saturated(alloc, ["a", "b"], 20, seed=0)
    # At most a start ahead (it re-enters at b's pass): not the 100 it left to b.
    assert starts["a"] - starts["b"] <= 2, starts


def test_starts_in_reserved_slots_do_not_count_against_the_shared_share() -> None:
    alloc = Allocator({"a": Lane(reserved=2), "b": Lane()}, capacity=4)
    starts = saturated(alloc, ["a", "b"], 4_000, seed=2)
    # a holds its 2 slots plus half of the 2 shared, b the other half: 3 slots to 1.
    assert abs(starts["a"] - 3_000) <= 60, starts


# --- invariants under random traffic ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(200))
def test_invariants_hold_under_random_traffic(seed: int) -> None:
    """Never over capacity, never a reserved slot lent, and never idle while work may start."""
    rng = random.Random(seed)
    capacity = rng.randint(1, 8)
    names = ["default", "a", "b", "c"][: rng.randint(1, 4)]
    budget = capacity
    lanes: dict[str, Lane] = {}
    for name in names:
        reserved = rng.randint(0, budget)
        budget -= reserved
        lanes[name] = Lane(reserved=reserved, weight=rng.randint(1, 4))
    shared = capacity - sum(lane.reserved for lane in lanes.values())
    alloc = Allocator(lanes, capacity)
    waiting: Counter[str] = Counter()
    running: list[Start] = []
    for _ in range(300):
        if rng.random() < 0.5:
            waiting[rng.choice(names)] += rng.randint(1, 3)
        elif running:
            alloc.finished(running.pop(rng.randrange(len(running))))
        running += fill(alloc, waiting)
        own = Counter(s.lane for s in running if not s.shared)
        borrowed = sum(s.shared for s in running)
        assert len(running) <= capacity
        assert borrowed <= shared, "a lane ran on another lane's reservation"
        assert all(own[lane] <= lanes[lane].reserved for lane in own)
        for lane, q in waiting.items():
            if q:
                assert own[lane] == lanes[lane].reserved, f"{lane} left its own slot idle"
                assert borrowed == shared, f"{lane} waits while a shared slot is free"
        total = Counter(s.lane for s in running)
        assert all(alloc.running(lane) == total[lane] for lane in names)


# --- configuration ------------------------------------------------------------------------------


def parse(body: str) -> Config:
    return parse_config(HEAD + body, base_dir=ETC)


def problems(body: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(body)
    return dict(info.value.problems)


def test_lanes_are_read_with_their_defaults_and_default_always_exists() -> None:
    config = parse("[lanes.critical]\nreserved = 1\nweight = 3\n[lanes.bulk]\n")
    assert dict(config.lanes) == {
        "default": Lane(),
        "critical": Lane(reserved=1, weight=3),
        "bulk": Lane(),
    }
    assert dict(parse("").lanes) == {"default": Lane()}


def test_the_default_lane_is_configurable() -> None:
    config = parse("[lanes.default]\nreserved = 2\nweight = 5\n")
    assert dict(config.lanes) == {"default": Lane(reserved=2, weight=5)}


def test_lane_keys_and_names_are_checked() -> None:
    found = problems(
        '[lanes.Bulk]\n[lanes.ok]\nreserve = 1\nweight = 0\n[lanes.x]\nreserved = "1"\n'
    )
    assert set(found) == {"lanes.Bulk", "lanes.ok.reserve", "lanes.ok.weight", "lanes.x.reserved"}
    assert "invalid lane name" in found["lanes.Bulk"]
    assert found["lanes.ok.reserve"] == 'unknown key; did you mean "reserved"?'
    assert found["lanes.ok.weight"] == "expected an integer >= 1, got 0"


def test_reservations_over_workers_max_are_an_error_at_the_last_reserved_key() -> None:
    found = problems(
        "[workers]\nmax = 4\n[lanes.a]\nreserved = 3\n[lanes.b]\n[lanes.c]\nreserved = 2\n"
    )
    assert found == {
        "lanes.c.reserved": "the lanes reserve 5 slots in all (a 3, c 2), more than workers.max 4"
    }
    found = problems("[lanes.a]\nreserved = 5\n")
    assert found == {
        "lanes.a.reserved": (
            "the lanes reserve 5 slots in all (a 5), more than workers.max 4 (the default)"
        )
    }


def test_reserving_every_slot_is_an_error_while_a_lane_has_none() -> None:
    found = problems("[workers]\nmax = 2\n[lanes.a]\nreserved = 2\n")
    assert found == {
        "lanes.a.reserved": (
            "the lanes reserve all 2 slots of workers.max 2 (a 2), so lane(s) default with no"
            " reservation could never run"
        )
    }
    config = parse("[workers]\nmax = 2\n[lanes.a]\nreserved = 1\n[lanes.default]\nreserved = 1\n")
    assert sum(lane.reserved for lane in config.lanes.values()) == 2


def test_a_refused_workers_max_is_no_bound_for_the_lanes() -> None:
    found = problems('[workers]\nmax = "8"\n[lanes.a]\nreserved = 6\n')
    assert set(found) == {"workers.max"}


SCHEDULE = '[schedules.job]\nevery = "1m"\ncommand = ["/bin/true"]\n'


def test_a_schedule_names_its_lane_default_by_default() -> None:
    config = parse("[lanes.critical]\n" + SCHEDULE + 'lane = "critical"\n')
    assert config.schedules[0].lane == "critical"
    assert parse(SCHEDULE).schedules[0].lane == DEFAULT_LANE
    assert parse(SCHEDULE + 'lane = "default"\n').schedules[0].lane == DEFAULT_LANE


def test_a_schedule_naming_an_unknown_lane_gets_a_suggestion() -> None:
    found = problems("[lanes.critical]\n" + SCHEDULE + 'lane = "critcal"\n')
    assert found == {
        "schedules.job.lane": (
            'unknown lane "critcal": there is no [lanes.critcal] table; did you mean "critical"?'
        )
    }


def test_a_lane_with_a_bad_value_is_reported_once_not_at_each_schedule() -> None:
    found = problems("[lanes.critical]\nweight = 0\n" + SCHEDULE + 'lane = "critical"\n')
    assert set(found) == {"lanes.critical.weight"}


def test_submit_checks_its_lane_against_the_config() -> None:
    config = parse("[lanes.critical]\n")
    assert api_lane(None, config) == DEFAULT_LANE
    assert api_lane("critical", config) == "critical"
    with pytest.raises(InvalidArgument, match=r'lane: unknown lane "critcal".*"critical"'):
        api_lane("critcal", config)


def test_a_submitted_task_may_not_carry_a_lane_key() -> None:
    with pytest.raises(ConfigError) as info:
        api_task({"command": ["/bin/true"], "lane": "critical"}, parse("[lanes.critical]\n"))
    assert dict(info.value.problems) == {
        "task.lane": "not allowed in a submitted task: pass `lane` to submit itself, next to `task`"
    }


def test_every_lane_key_has_a_row_in_the_reference() -> None:
    body = REFERENCE.read_text().split("`[lanes.NAME]`\n", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", body, re.MULTILINE))
    assert set(config_schema.LANE) == rows
