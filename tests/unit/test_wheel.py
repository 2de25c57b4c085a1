"""The timing wheel's contract, point by point, then against a sorted-list reference model.

The model tests are the real guard: thousands of random inserts, cancels, re-inserts and
advances (big jumps, past due times, due times far beyond the top level, many equal due times,
hand-outs limited to a few handles) on small wheels, where cascades and the overflow happen
every few milliseconds.
"""

from __future__ import annotations

import bisect
import itertools
import random
import weakref

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from schedd import dueset
from schedd.errors import InvalidArgument
from schedd.wheel import TimingWheel

NOW = 1_000_000
DAY_MS = 86_400_000


def drive(wheel: TimingWheel[str]) -> list[tuple[int, list[tuple[str, int]]]]:
    """What the tickless driver does: sleep until next_expiry, advance, repeat until empty."""
    wakes: list[tuple[int, list[tuple[str, int]]]] = []
    while (wake_at := wheel.next_expiry()) is not None:
        assert wake_at > wheel.now_ms, "a driver woken at or before now would spin"
        wakes.append((wake_at, wheel.advance(wake_at)))
    return wakes


# --- contract points --------------------------------------------------------------------------


def test_entry_is_not_returned_a_millisecond_before_its_due_time() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("a", NOW + 100)
    assert wheel.advance(NOW + 99) == []
    assert "a" in wheel
    assert wheel.advance(NOW + 100) == [("a", NOW + 100)]
    assert "a" not in wheel
    assert wheel.now_ms == NOW + 100


def test_advance_returns_all_due_entries_sorted_by_due_with_ties_in_insertion_order() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    for key, due in [("c", 300), ("a", 5), ("x", 70_000), ("b", 300), ("d", 5), ("e", 301)]:
        wheel.insert(key, NOW + due)
    fired = wheel.advance(NOW + 300)
    assert fired == [("a", NOW + 5), ("d", NOW + 5), ("c", NOW + 300), ("b", NOW + 300)]
    assert len(wheel) == 2


def test_reinsert_moves_the_key_and_counts_as_a_fresh_insertion() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("a", NOW + 10)
    wheel.insert("b", NOW + 10)
    wheel.insert("a", NOW + 5_000_000)  # far away: another level
    wheel.insert("a", NOW + 10)  # back again, now behind "b"
    assert len(wheel) == 2
    assert wheel.due_of("a") == NOW + 10
    assert wheel.advance(NOW + 10) == [("b", NOW + 10), ("a", NOW + 10)]
    assert wheel.next_expiry() is None


def test_reinsert_later_means_it_no_longer_fires_at_the_old_time() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("a", NOW + 10)
    wheel.insert("a", NOW + 20)
    assert wheel.advance(NOW + 15) == []
    assert wheel.advance(NOW + 20) == [("a", NOW + 20)]


def test_cancel_forgets_the_key_and_reports_whether_it_was_held() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("a", NOW + 10)
    wheel.insert("far", NOW + 400 * DAY_MS)
    assert wheel.cancel("a") is True
    assert wheel.cancel("a") is False
    assert wheel.cancel("never") is False
    assert wheel.cancel("far") is True
    assert len(wheel) == 0
    assert wheel.due_of("a") is None
    assert wheel.advance(NOW + 500 * DAY_MS) == []


def test_cancel_after_firing_reports_absent() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("a", NOW + 1)
    assert wheel.advance(NOW + 1) == [("a", NOW + 1)]
    assert wheel.cancel("a") is False


def test_contains_len_and_due_of_track_inserts() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    assert len(wheel) == 0
    assert "a" not in wheel
    wheel.insert("a", NOW + 7)
    wheel.insert("b", NOW - 7)
    assert len(wheel) == 2
    assert "a" in wheel
    assert 42 not in wheel  # any object may be asked about
    assert wheel.due_of("b") == NOW - 7


def test_past_due_time_fires_at_the_next_advance_even_without_time_passing() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("late", NOW - 5)
    wheel.insert("now", NOW)
    expiry = wheel.next_expiry()
    assert expiry is not None
    assert expiry <= NOW - 5
    assert wheel.advance(NOW) == [("late", NOW - 5), ("now", NOW)]


def test_advance_backwards_is_rejected_as_a_value_error() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.advance(NOW + 10)
    with pytest.raises(ValueError, match=rf"advance\({NOW + 9}\)"):
        wheel.advance(NOW + 9)
    with pytest.raises(InvalidArgument):
        wheel.advance(NOW)
    assert wheel.now_ms == NOW + 10


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"now_ms": -1}, "now_ms"),
        ({"now_ms": 0, "tick_ms": 0}, "tick_ms"),
        ({"now_ms": 0, "slots": 60}, "slots"),
        ({"now_ms": 0, "slots": 1}, "slots"),
        ({"now_ms": 0, "levels": 0}, "levels"),
    ],
)
def test_constructor_rejects_a_bad_shape_naming_the_argument(
    kwargs: dict[str, int], named: str
) -> None:
    with pytest.raises(InvalidArgument, match=named):
        TimingWheel(**kwargs)


def test_next_expiry_is_none_when_empty_and_exact_for_the_finest_level() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    assert wheel.next_expiry() is None
    wheel.insert("a", NOW + 40)
    assert wheel.next_expiry() == NOW + 40


def test_next_expiry_of_a_coarse_slot_is_its_cascade_point_then_refines_to_the_due_time() -> None:
    # slots=4, levels=3: level widths 1, 4, 16 ms; the wheel spans 64 ms.
    wheel: TimingWheel[str] = TimingWheel(0, slots=4, levels=3)
    wheel.insert("a", 3)
    wheel.insert("b", 13)
    wheel.insert("e", 70)
    assert wheel.next_expiry() == 3
    assert wheel.advance(5) == [("a", 3)]
    assert wheel.next_expiry() == 12  # level 1, slot [12, 16): cascade point, before b
    assert wheel.advance(12) == []
    assert wheel.next_expiry() == 13
    assert wheel.advance(64) == [("b", 13)]
    assert wheel.next_expiry() == 68  # e cascaded from the overflow to level 1, slot [68, 72)
    assert wheel.advance(70) == [("e", 70)]


def test_cancelling_the_only_entry_of_a_slot_stops_next_expiry_pointing_at_it() -> None:
    wheel: TimingWheel[str] = TimingWheel(0, slots=4, levels=3)
    wheel.insert("a", 13)  # level 1, slot starting at 12
    wheel.insert("b", 40)  # level 2, slot starting at 32
    wheel.insert("far", 1_000)  # overflow window starting at 960
    assert wheel.next_expiry() == 12
    wheel.cancel("a")
    assert wheel.next_expiry() == 32
    wheel.cancel("b")
    assert wheel.next_expiry() == 960
    wheel.cancel("far")
    assert wheel.next_expiry() is None


def test_next_expiry_skips_an_overflow_window_emptied_by_cancel() -> None:
    wheel: TimingWheel[str] = TimingWheel(0, slots=4, levels=2)  # spans 16 ms
    wheel.insert("soon", 100)
    wheel.insert("later", 200)
    wheel.cancel("soon")
    assert wheel.next_expiry() == 192
    assert drive(wheel) == [(192, []), (200, [("later", 200)])]


def test_driver_hits_every_due_time_exactly_across_levels_and_the_overflow() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    offsets = [1, 63, 64, 65, 4_095, 4_097, 262_145, 16_777_217, 20 * DAY_MS, 400 * DAY_MS]
    for offset in offsets:
        wheel.insert(f"+{offset}", NOW + offset)
    wakes = drive(wheel)
    fired = [entry for _, batch in wakes for entry in batch]
    assert fired == [(f"+{offset}", NOW + offset) for offset in offsets]
    assert all(due == wake_at for wake_at, batch in wakes for _, due in batch)
    # Cascade wake-ups are bounded by levels + overflow per entry, not by elapsed time.
    assert len(wakes) <= len(offsets) * 6


def test_an_entry_400_days_out_fires_exactly_on_time_after_a_few_cascades() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("yearly", NOW + 400 * DAY_MS + 123)
    wakes = drive(wheel)
    assert wakes[-1] == (NOW + 400 * DAY_MS + 123, [("yearly", NOW + 400 * DAY_MS + 123)])
    assert len(wakes) <= 6


def test_huge_jumps_over_a_sparse_wheel_cost_nothing_per_elapsed_tick() -> None:
    # 2**62 ms of 1 ms ticks: an implementation that walked ticks would never finish.
    wheel: TimingWheel[str] = TimingWheel(NOW)
    wheel.insert("a", NOW + 10)
    wheel.insert("b", 2**61)
    assert wheel.advance(2**60) == [("a", NOW + 10)]
    for hour in range(1, 1_000):
        assert wheel.advance(2**60 + hour * 3_600_000) == []
    assert wheel.advance(2**62) == [("b", 2**61)]
    assert wheel.next_expiry() is None


def test_coarse_tick_stays_exact_inside_a_tick() -> None:
    wheel: TimingWheel[str] = TimingWheel(0, tick_ms=10)
    wheel.insert("a", 15)
    wheel.insert("b", 12)
    assert wheel.next_expiry() == 10  # the slot's start: never later than 12
    assert wheel.advance(12) == [("b", 12)]
    assert wheel.next_expiry() == 15
    assert wheel.advance(14) == []
    wheel.insert("c", 13)  # already past, within the current tick
    assert wheel.advance(14) == [("c", 13)]
    assert wheel.advance(100) == [("a", 15)]


def test_a_pulse_of_equal_due_times_fires_in_one_batch_in_insertion_order() -> None:
    n = 100_000
    due = NOW + 5 * 60_000
    wheel: TimingWheel[int] = TimingWheel(NOW)
    for key in range(n):
        wheel.insert(key, due)
    for key in range(0, n, 10):
        wheel.cancel(key)
    wakes: list[list[tuple[int, int]]] = []
    while (wake_at := wheel.next_expiry()) is not None:
        wakes.append(wheel.advance(wake_at))
    assert [len(batch) for batch in wakes[:-1]] == [0] * (len(wakes) - 1)
    assert wakes[-1] == [(key, due) for key in range(n) if key % 10]
    assert len(wakes) <= 5


def test_drain_returns_everything_in_advance_order_and_leaves_a_usable_wheel() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    for key, offset in [("x", 400 * DAY_MS), ("b", 50), ("past", -3), ("a", 50), ("m", 9_000)]:
        wheel.insert(key, NOW + offset)
    wheel.insert("b", NOW + 50)  # a re-insert goes behind its equal-due peers
    assert wheel.drain() == [
        ("past", NOW - 3),
        ("a", NOW + 50),
        ("b", NOW + 50),
        ("m", NOW + 9_000),
        ("x", NOW + 400 * DAY_MS),
    ]
    assert len(wheel) == 0
    assert wheel.next_expiry() is None
    assert wheel.advance(NOW + 500 * DAY_MS) == []
    wheel.insert("b", NOW + 500 * DAY_MS + 1)
    assert wheel.advance(NOW + 500 * DAY_MS + 1) == [("b", NOW + 500 * DAY_MS + 1)]


# --- due times shared by many handles, limited hand-outs -----------------------------------------


def entries_held(wheel: TimingWheel[int]) -> int:
    """How many due-time entries the wheel's slots hold (not handles)."""
    return sum(len(slot) for slot in wheel._slots)


@pytest.mark.parametrize("sharing", [2, 16, 17, 1_000], ids=["pair", "few", "many", "pulse"])
def test_handles_sharing_a_due_time_expire_together_in_insertion_order(sharing: int) -> None:
    wheel: TimingWheel[int] = TimingWheel(NOW)
    for key in range(sharing):
        wheel.insert(1_000_000 + key, NOW + 9_000)  # the loners, interleaved
        wheel.insert(key, NOW + 5_000)
        wheel.insert(2_000_000 + key, NOW + 5_001)
    assert wheel.advance(NOW + 4_999) == []
    assert wheel.advance(NOW + 5_001) == [(key, NOW + 5_000) for key in range(sharing)] + [
        (2_000_000 + key, NOW + 5_001) for key in range(sharing)
    ]
    assert len(wheel) == sharing


@pytest.mark.parametrize("sharing", [2, 3, 16, 17, 40], ids=lambda n: f"{n}-sharing")
@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_cancelling_one_of_many_sharing_a_due_time_keeps_the_others_in_order(
    sharing: int, which: str
) -> None:
    wheel: TimingWheel[int] = TimingWheel(NOW)
    for key in range(sharing):
        wheel.insert(key, NOW + 300)
    gone = {"first": 0, "middle": sharing // 2, "last": sharing - 1}[which]
    assert wheel.cancel(gone) is True
    assert wheel.cancel(gone) is False
    assert gone not in wheel
    assert len(wheel) == sharing - 1
    assert wheel.advance(NOW + 300) == [(key, NOW + 300) for key in range(sharing) if key != gone]


@pytest.mark.parametrize("sharing", [2, 17])
def test_cancelling_every_handle_of_a_shared_due_time_empties_its_slot(sharing: int) -> None:
    wheel: TimingWheel[int] = TimingWheel(0, slots=4, levels=3)
    for key in range(sharing):
        wheel.insert(key, 13)  # level 1, slot [12, 16)
    wheel.insert(99, 40)  # level 2, slot [32, 48)
    for key in reversed(range(sharing)):
        assert wheel.next_expiry() == 12
        wheel.cancel(key)
    assert wheel.next_expiry() == 32, "no wake-up left for an emptied slot"


def test_a_cascade_moves_a_pulse_as_one_entry_and_keeps_every_handle() -> None:
    n = 50_000
    due = NOW + 60_000  # level 2: cascades to level 1, then level 0
    wheel: TimingWheel[int] = TimingWheel(NOW)
    for key in range(n):
        wheel.insert(key, due)
    wheel.insert(n, due + 1)
    wakes = []
    while (wake_at := wheel.next_expiry()) is not None and wake_at < due:
        assert wheel.advance(wake_at) == []
        assert entries_held(wheel) == 2, "one entry per due time, not one per handle"
        wakes.append(wake_at)
    assert 2 <= len(wakes) <= 4, wakes
    assert len(wheel) == n + 1
    assert wheel.advance(due) == [(key, due) for key in range(n)]
    assert wheel.advance(due + 1) == [(n, due + 1)]


class Key:
    """A key that can be watched for being let go (hashed by identity)."""


def test_a_pulse_lets_go_of_its_keys_page_by_page_as_they_are_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wheel holds a pulse's last references to its keys: freeing them all at its last
    hand-out would be one loop callback as long as the pulse is large."""
    monkeypatch.setattr(dueset, "FEW", 2)
    monkeypatch.setattr(dueset, "PAGE", 10)
    wheel: TimingWheel[Key] = TimingWheel(NOW)
    refs = []
    for _ in range(100):
        key = Key()
        refs.append(weakref.ref(key))
        wheel.insert(key, NOW + 5)
    del key
    assert len(wheel.advance(NOW + 5, limit=25)) == 25  # two pages walked, a third begun
    assert [ref() is not None for ref in refs] == [False] * 20 + [True] * 80
    assert len(wheel.advance(NOW + 5)) == 75
    assert all(ref() is None for ref in refs)


def test_a_limited_advance_hands_out_a_pulse_in_order_in_steps_and_never_early() -> None:
    wheel: TimingWheel[int] = TimingWheel(NOW)
    for key in range(1_000):
        wheel.insert(key, NOW + 100)
    wheel.insert(5_000, NOW + 101)
    assert wheel.advance(NOW + 99, limit=300) == []
    steps = [wheel.advance(NOW + 100, limit=300) for _ in range(4)]
    assert [len(step) for step in steps] == [300, 300, 300, 100]
    assert [entry for step in steps for entry in step] == [(key, NOW + 100) for key in range(1_000)]
    assert wheel.advance(NOW + 100, limit=300) == [], "the not yet due one stays, with room left"
    assert len(wheel) == 1
    assert wheel.advance(NOW + 101, limit=300) == [(5_000, NOW + 101)]


def test_what_falls_due_during_a_limited_hand_out_goes_ahead_of_the_rest() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    pulse = [f"p{i}" for i in range(8)]
    for key in pulse:
        wheel.insert(key, NOW + 10)
    wheel.insert("b", NOW + 30)
    wheel.insert("a", NOW + 20)
    assert wheel.advance(NOW + 10, limit=3) == [(key, NOW + 10) for key in pulse[:3]]
    assert wheel.next_expiry() == NOW + 10, "the rest of the pulse: advance now"
    wheel.insert("late", NOW - 50)  # armed already due: new at the next advance
    assert wheel.advance(NOW + 30, limit=3) == [
        ("late", NOW - 50),
        ("a", NOW + 20),
        ("b", NOW + 30),
    ]
    assert wheel.advance(NOW + 30, limit=3) == [(key, NOW + 10) for key in pulse[3:6]]
    assert wheel.advance(NOW + 30) == [(key, NOW + 10) for key in pulse[6:]]
    assert wheel.next_expiry() is None


def test_a_handle_expired_but_not_handed_out_can_be_cancelled_or_moved() -> None:
    wheel: TimingWheel[str] = TimingWheel(NOW)
    pulse = [f"p{i}" for i in range(30)]
    for key in pulse:
        wheel.insert(key, NOW + 10)
    assert len(wheel.advance(NOW + 10, limit=5)) == 5
    assert "p7" in wheel
    assert wheel.cancel("p7") is True
    wheel.insert("p8", NOW + 40)  # moved later: not due any more
    wheel.insert("p9", NOW + 10)  # inserted again at the same time: a fresh insertion
    assert len(wheel) == 24
    assert wheel.advance(NOW + 10, limit=3) == [
        ("p9", NOW + 10),
        ("p5", NOW + 10),
        ("p6", NOW + 10),
    ]
    rest = wheel.advance(NOW + 10)
    assert rest == [(key, NOW + 10) for key in pulse[10:]], "each handed out once"
    assert wheel.advance(NOW + 40) == [("p8", NOW + 40)]
    assert len(wheel) == 0


def test_drain_takes_handles_left_in_a_round_too() -> None:
    wheel: TimingWheel[int] = TimingWheel(NOW)
    for key in range(20):
        wheel.insert(key, NOW + 5 + key // 10)
    wheel.insert(99, NOW + 500)
    assert wheel.advance(NOW + 6, limit=4) == [(key, NOW + 5) for key in range(4)]
    assert wheel.drain() == [(key, NOW + 5 + key // 10) for key in range(4, 20)] + [(99, NOW + 500)]
    assert len(wheel) == 0
    assert wheel.next_expiry() is None
    assert wheel.advance(NOW + 1_000) == []


def test_a_limit_below_one_is_rejected() -> None:
    wheel: TimingWheel[int] = TimingWheel(NOW)
    with pytest.raises(InvalidArgument, match="limit"):
        wheel.advance(NOW, limit=0)


# --- reference model --------------------------------------------------------------------------


class SortedListModel:
    """The obvious implementation: waiting handles in one list sorted by (due, insertion
    sequence); each advance moves the due ones into a new round and hands out up to ``limit``,
    newest round first."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int]] = []  # (due, seq, key), waiting
        self.rounds: list[list[tuple[int, int, int]]] = []  # due, not handed out yet
        self.where: dict[int, tuple[int, int]] = {}
        self.seq = itertools.count()

    def insert(self, key: int, due: int) -> None:
        self.cancel(key)
        item = (due, next(self.seq))
        self.where[key] = item
        bisect.insort(self.entries, (*item, key))

    def cancel(self, key: int) -> bool:
        item = self.where.pop(key, None)
        if item is None:
            return False
        entry = (*item, key)
        for held in (self.entries, *self.rounds):
            at = bisect.bisect_left(held, entry)
            if at < len(held) and held[at] == entry:
                del held[at]
        self.rounds = [round_ for round_ in self.rounds if round_]
        return True

    def advance(self, now: int, limit: int | None = None) -> list[tuple[int, int]]:
        cut = bisect.bisect_right(self.entries, (now, float("inf")))
        if cut:
            self.rounds.append(self.entries[:cut])
            self.entries = self.entries[cut:]
        fired: list[tuple[int, int, int]] = []
        while self.rounds and (limit is None or len(fired) < limit):
            newest = self.rounds[-1]
            room = len(newest) if limit is None else limit - len(fired)
            fired += newest[:room]
            del newest[:room]
            if not newest:
                self.rounds.pop()
        for _, _, key in fired:
            del self.where[key]
        return [(key, due) for due, _, key in fired]

    def earliest(self) -> int | None:
        return min((held[0][0] for held in (self.entries, *self.rounds) if held), default=None)

    def drain(self) -> list[tuple[int, int]]:
        everything = sorted(itertools.chain(self.entries, *self.rounds))
        self.entries, self.rounds, self.where = [], [], {}
        return [(key, due) for due, _, key in everything]


def check_same(wheel: TimingWheel[int], model: SortedListModel) -> None:
    assert len(wheel) == len(model.where)
    earliest = model.earliest()
    expiry = wheel.next_expiry()
    if earliest is None:
        assert expiry is None
    else:
        assert expiry is not None
        assert expiry <= earliest, "next_expiry later than the earliest due time"


SHAPES = [
    pytest.param({"tick_ms": 1, "slots": 64, "levels": 5}, id="default"),
    pytest.param({"tick_ms": 1, "slots": 4, "levels": 3}, id="tiny-1ms"),
    pytest.param({"tick_ms": 7, "slots": 4, "levels": 2}, id="tiny-7ms"),
    pytest.param({"tick_ms": 3, "slots": 2, "levels": 1}, id="one-level"),
    pytest.param({"tick_ms": 1, "slots": 8, "levels": 4}, id="8x4"),
]


def spread(rng: random.Random, limit: int) -> int:
    """A distance in [0, limit), log-uniform so that every level of the wheel gets its share."""
    return rng.randrange(0, min(limit, 1 << rng.randrange(0, limit.bit_length() + 1)) + 1)


def random_due(rng: random.Random, now: int, span: int) -> int:
    """Mostly near, some in the past, some far beyond the top level, many on a few hot times."""
    kind = rng.random()
    if kind < 0.15:
        return now - spread(rng, span)
    if kind < 0.35:
        return (now + spread(rng, span)) // 16 * 16 + 16  # hot: equal due times
    if kind < 0.45:
        return now + rng.randrange(span, span * 1_000)
    return now + spread(rng, span)


@pytest.mark.parametrize("entries", ["default", "tiny"], ids=lambda e: f"{e}-entries")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", range(4))
def test_random_operations_match_the_sorted_list_model(
    shape: dict[str, int], seed: int, entries: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default entries keep most shared due times in the tuple form; tiny ones (tuples of 2,
    pages of 3) in the paged form, with pages filled, emptied and handed out midway."""
    if entries == "tiny":
        monkeypatch.setattr(dueset, "FEW", 2)
        monkeypatch.setattr(dueset, "PAGE", 3)
    rng = random.Random(seed * 1_000 + shape["slots"] * 10 + shape["levels"])
    span = shape["tick_ms"] * shape["slots"] ** shape["levels"]  # the wheel's horizon
    now = rng.randrange(0, 10 * span)
    wheel: TimingWheel[int] = TimingWheel(now, **shape)
    model = SortedListModel()
    keys = range(60)
    for _ in range(4_000):
        op = rng.random()
        if op < 0.45:
            key, due = rng.choice(keys), random_due(rng, now, span)
            wheel.insert(key, due)
            model.insert(key, due)
        elif op < 0.55:
            key = rng.choice(keys)
            assert wheel.cancel(key) == model.cancel(key)
        else:
            step = rng.random()
            if step < 0.4 and (expiry := wheel.next_expiry()) is not None:
                now = max(now, expiry)  # the driver's own wake-up
            elif step < 0.9:
                now += spread(rng, span)
            elif step < 0.95:
                now += rng.randrange(span, span * 2_000)  # a big jump
            limit = rng.choice([None, None, 1, 2, 7])
            fired = wheel.advance(now, limit)
            assert fired == model.advance(now, limit)
            assert all(due <= now for _, due in fired), "fired early"
        key = rng.choice(keys)
        assert wheel.due_of(key) == model.where.get(key, (None,))[0]
        assert (key in wheel) == (key in model.where)
        check_same(wheel, model)
    assert wheel.drain() == model.drain()
    assert len(wheel) == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_a_driver_that_only_sleeps_until_next_expiry_fires_everything_on_time(
    shape: dict[str, int],
) -> None:
    rng = random.Random(shape["tick_ms"] * 100 + shape["slots"])
    span = shape["tick_ms"] * shape["slots"] ** shape["levels"]
    wheel: TimingWheel[str] = TimingWheel(span // 3, **shape)
    dues = {f"k{i}": span // 3 + 1 + spread(rng, span * 50) for i in range(500)}
    for key, due in dues.items():
        wheel.insert(key, due)
    fired = {key: (due, wake_at) for wake_at, batch in drive(wheel) for key, due in batch}
    assert fired.keys() == dues.keys()
    assert all(due == wake_at for due, wake_at in fired.values()), "late or early"


# --- the same, as a hypothesis state machine (shrinks a failure to a short story) -------------


class WheelMachine(RuleBasedStateMachine):
    """A tiny wheel (4 slots, 2 levels, 3 ms ticks): every path is a few steps away."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 100
        self.wheel: TimingWheel[int] = TimingWheel(self.now, tick_ms=3, slots=4, levels=2)
        self.model = SortedListModel()

    @rule(key=st.integers(0, 7), offset=st.integers(-60, 400))
    def insert(self, key: int, offset: int) -> None:
        self.wheel.insert(key, self.now + offset)
        self.model.insert(key, self.now + offset)

    @rule(key=st.integers(0, 7))
    def cancel(self, key: int) -> None:
        assert self.wheel.cancel(key) == self.model.cancel(key)

    @rule(step=st.integers(0, 200), limit=st.one_of(st.none(), st.integers(1, 3)))
    def advance(self, step: int, limit: int | None) -> None:
        self.now += step
        assert self.wheel.advance(self.now, limit) == self.model.advance(self.now, limit)

    @precondition(lambda self: self.wheel.next_expiry() is not None)
    @rule(limit=st.one_of(st.none(), st.integers(1, 3)))
    def wake_up(self, limit: int | None) -> None:
        expiry = self.wheel.next_expiry()
        assert expiry is not None
        self.now = max(self.now, expiry)
        assert self.wheel.advance(self.now, limit) == self.model.advance(self.now, limit)

    @invariant()
    def agrees_with_model(self) -> None:
        check_same(self.wheel, self.model)


TestWheelMachine = WheelMachine.TestCase
TestWheelMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
