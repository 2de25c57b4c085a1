"""A pure hierarchical timing wheel: which handles are due, and when to look next.

The wheel answers two questions for the dispatcher's tickless driver: *what is due now*
(``advance``) and *how long may I sleep* (``next_expiry``). It reads no clock and awaits
nothing; the driver sleeps until ``next_expiry()``, reads the monotonic clock and calls
``advance(now)``. It holds only light handles, ``(key, due_ms)``, never payloads (DESIGN §4), so
its memory is about a hundred bytes per handle beyond the key itself, whatever the task carries.

Why a wheel and not a heap
--------------------------
A binary heap costs O(log n) per insert and needs lazy deletion (or O(n)) to cancel. The
dispatcher inserts a 500 000-firing pulse at once, and run timeouts / idle deadlines are
almost always cancelled before they expire. A wheel makes both insert and cancel O(1): a
handle goes into a *slot* picked by arithmetic on its due time, and cancelling deletes it from
that slot (each slot is a dict, so deletion is O(1) and the dict keeps insertion order).

Levels, digits and slot widths
------------------------------
Time is counted in *ticks* of ``tick_ms``. With ``slots = 2**b``, a tick number is read as a
number in base ``slots``; level ``L`` is its digit ``L``. Level ``L`` has ``slots`` slots, each
``slots**L`` ticks wide, so it spans ``slots**(L+1)`` ticks. The defaults (``tick_ms=1``,
``slots=64``, ``levels=5``) give the kernel's 64-slot levels, but each level is 64 times
coarser than the one below (the kernel's only 8, as its levels overlap instead of cascading)::

    level  slot width        level span
      0        1 ms              64 ms
      1       64 ms           4 096 ms  (~4 s)
      2    4 096 ms         262 144 ms  (~4.4 min)
      3  262 144 ms      16 777 216 ms  (~4.7 h)
      4   ~4.7 h      1 073 741 824 ms  (~12.4 days)  <- the wheel's horizon
    overflow: one coarse bucket per further 12.4-day window, ordered by a small heap

A handle due at tick ``d``, when the wheel's clock is at tick ``c < d``, goes to the level of
the **highest digit in which d and c differ**, and to the slot given by ``d``'s digit there::

    level = (bit_length(d ^ c) - 1) // b        slot = (d >> (level * b)) & (slots - 1)

(tokio's timer wheel picks its level the same way). Placement is a function of ``(d, c)``
alone, which gives the wheel its invariants:

* every handle with the same due time lives in the same slot (or bucket), so moving a slot
  keeps ties in insertion order;
* a handle's slot can be recomputed from its due time, so cancel needs no back-pointer;
* all of level L is earlier than all of level L+1 (level L shares every digit above L with
  ``c``; level L+1 has a larger digit L+1), and within a level slots are in time order, so
  the first set bit of the first non-empty level's bitmap is the earliest slot;
* every occupied slot at level L has a digit larger than ``c``'s digit L: the slot that
  ``c`` is "in" is always empty, because reaching it drains it.

Worked example (``tick_ms=1``, ``slots=4`` so b=2, ``levels=3``; span 4, 16, 64 ms)::

    c = 0  insert a@3   3 = 0b00_00_11  differs from c in digit 0   -> level 0, slot 3
           insert b@13  13 = 0b00_11_01 differs first in digit 1    -> level 1, slot 3
           insert e@70  70 = 0b1_00_01_10 differs above digit 2     -> overflow window 1
           next_expiry() = 3    (level 0, slot 3 starts at 3)
    advance(5)   c: 0 -> 5. Level 0's window [0, 4) is over: drain its slots -> a fires.
                 Level 1's slot 3 starts at 12 > 5: untouched.             returns [(a, 3)]
           next_expiry() = 12   (level 1, slot 3 starts at 12; b is due at 13)
    advance(12)  drain level 1 slot 3 ("cascade"): b is not due (13 > 12), so it is re-placed
                 relative to c = 12 = 0b11_00: 13 differs in digit 0  -> level 0, slot 1
           next_expiry() = 13
    advance(64)  b fires; crossing into the 64 ms window 1 pops overflow window 1 from the
                 heap and re-places e relative to c = 64: 70 -> level 1, slot 1.
                                                                         returns [(b, 13)]

Cascading and why nothing fires early
-------------------------------------
Kafka's wheel expires a whole bucket at the bucket's start, so a task may run up to one tick
*early*; the kernel rounds expiry *up* to the slot's granularity and never cascades, fine for
timeouts that are usually cancelled. A scheduler that pays money on time can do neither. Here
a slot reaching its start is only a *cascade point*: each handle in it is compared on its own
exact ``due_ms`` against ``now``; the due ones are returned and the rest are re-placed
relative to the new clock, always at a strictly lower level (they now share digit L with
``c``). So ``advance(now)`` returns exactly the handles with ``due <= now`` -- never early, and
with an advance at the due millisecond never late, whatever ``tick_ms`` is. A handle is moved
at most ``levels + 1`` times in its life.

With ``tick_ms > 1`` a level-0 slot holds several due times. An advance landing inside a
slot's tick returns the due part and keeps the rest in a small *current* bucket (ticks
``<= c``), which later advances filter again; handles inserted with a due time already
passed go there too and fire at the next advance, even one with an unchanged ``now``.

next_expiry: never later, cheap, tickless
-----------------------------------------
``next_expiry`` returns the start of the earliest non-empty slot (first set bit of the first
non-empty level's bitmap), or the exact minimum of the current bucket, or the start of the
earliest overflow window. Each is ``<=`` every due time it stands for, so the driver never
oversleeps. It may be earlier: for a coarse slot it is the cascade point, after which
``next_expiry`` is finer. A handle 10 minutes out therefore costs the driver a handful of
wake-ups (one per level it cascades through), all shared with every other handle in those
slots; an idle wheel costs nothing, and advancing an empty wheel by an hour is O(levels).
Cancelling clears a slot's bit when the slot empties, so bitmaps never point at empty slots.

The overflow
------------
Due times beyond the top level (those that differ from ``c`` above the top digit) go to one
bucket per top-level window, a dict keyed by window number, plus a heap of window numbers.
Inserting into an existing bucket is O(1); a new bucket costs one O(log w) heap push. When
``advance`` crosses into a window it pops that bucket and re-places its handles, exactly like
a cascade. The scheduler keeps occurrences beyond its load horizon in SQLite, so the overflow
stays small; it exists so that any due time, however far, stays correct. Buckets emptied by
cancel are dropped when they reach the heap's top.

Complexity
----------
``insert`` and ``cancel``: O(1) (a few integer operations and dict updates; O(log w) once per
new overflow window). ``next_expiry``: O(levels). ``advance``: O(levels + slots drained +
handles moved), never proportional to elapsed ticks, plus a sort of the returned handles:
linear when they come out in order, as for a driver waking at ``next_expiry`` with
``tick_ms=1`` (each wake-up returns one millisecond's batch), O(k log k) after a long jump.
``drain``: O(n log n). The wheel is not thread-safe; the driver owns it.

The wheel's clock starts at ``now_ms >= 0`` (a monotonic clock's value) so that tick numbers
are non-negative and ``d ^ c`` is meaningful.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from operator import itemgetter
from typing import Generic, TypeVar

from schedd.errors import InvalidArgument

K = TypeVar("K", bound=Hashable)

_by_due = itemgetter(1)


class WheelArgumentError(InvalidArgument, ValueError):
    """An argument the wheel cannot accept (a bad shape, or time going backwards).

    Also a ``ValueError``, which is what the wheel's callers were promised: feeding it an
    earlier time is a driver bug (it must feed the monotonic clock), not an operator error.
    """


class TimingWheel(Generic[K]):
    """Handles ``(key, due_ms)`` in a hierarchical wheel; see the module docstring."""

    def __init__(self, now_ms: int, *, tick_ms: int = 1, slots: int = 64, levels: int = 5) -> None:
        if now_ms < 0:
            raise WheelArgumentError(f"now_ms must be >= 0 (a monotonic clock), got {now_ms}")
        if tick_ms < 1:
            raise WheelArgumentError(f"tick_ms must be >= 1, got {tick_ms}")
        if slots < 2 or slots & (slots - 1):
            raise WheelArgumentError(f"slots must be a power of two >= 2, got {slots}")
        if levels < 1:
            raise WheelArgumentError(f"levels must be >= 1, got {levels}")
        self._tick_ms = tick_ms
        self._bits = slots.bit_length() - 1
        self._mask = slots - 1
        self._levels = levels
        #: Bits of tick number covered by the levels; above them, the overflow window number.
        self._wheel_bits = levels * self._bits
        self._now_ms = now_ms
        self._tick = now_ms // tick_ms
        #: Every handle held, in insertion order (a re-insert moves the key to the end).
        self._due: dict[K, int] = {}
        #: Handles whose tick is <= the clock's: due at the next advance, or (tick_ms > 1)
        #: later within the current tick.
        self._current: dict[K, int] = {}
        #: A lower bound of the due times in ``_current`` (exact after each advance).
        self._current_min = 0
        #: Slot ``s`` of level ``L`` is ``_slots[(L << bits) | s]``; bit ``s`` of
        #: ``_bitmaps[L]`` is set exactly when that slot is non-empty.
        self._slots: list[dict[K, int]] = [{} for _ in range(levels << self._bits)]
        self._bitmaps = [0] * levels
        #: Overflow window number -> bucket; each key is in ``_overflow_heap`` exactly once.
        self._overflow: dict[int, dict[K, int]] = {}
        self._overflow_heap: list[int] = []

    @property
    def now_ms(self) -> int:
        """The time of the last ``advance`` (or of construction)."""
        return self._now_ms

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def due_of(self, key: K) -> int | None:
        return self._due.get(key)

    def insert(self, key: K, due_ms: int) -> None:
        """Hold ``key`` until ``due_ms``; an existing key is moved (and counts as inserted now).

        A due time at or before ``now_ms`` fires at the next ``advance``, even one with the
        same ``now``: the caller decided it is due, the wheel must not lose it.
        """
        old = self._due.pop(key, None)
        if old is not None:
            self._unlink(key, old)
        self._due[key] = due_ms
        self._link(key, due_ms)

    def cancel(self, key: K) -> bool:
        """Forget ``key``; False if it was not held (already fired, cancelled or never added)."""
        due = self._due.pop(key, None)
        if due is None:
            return False
        self._unlink(key, due)
        return True

    def next_expiry(self) -> int | None:
        """When the driver must call ``advance`` next: never later than the earliest due time.

        ``None`` when empty. May be earlier than any due time (a coarse slot's cascade point).
        A value ``<= now_ms`` means "advance now": something is due already, or (rarely) a
        cancel left a stale lower bound that the next ``advance`` refreshes.
        """
        if self._current:
            return self._current_min
        bits = self._bits
        for level, bitmap in enumerate(self._bitmaps):
            if bitmap:
                slot = (bitmap & -bitmap).bit_length() - 1
                above = (level + 1) * bits
                start = ((self._tick >> above) << above) | (slot << (level * bits))
                return start * self._tick_ms
        heap = self._overflow_heap
        while heap:
            if self._overflow[heap[0]]:
                return (heap[0] << self._wheel_bits) * self._tick_ms
            del self._overflow[heapq.heappop(heap)]
        return None

    def advance(self, now_ms: int) -> list[tuple[K, int]]:
        """Move the clock to ``now_ms`` and return every handle with ``due <= now_ms``.

        Sorted by due time, equal due times in insertion order; never a handle that is not
        due. Only slots whose start has been reached are touched, found through the bitmaps,
        so the cost does not depend on how much time passed.
        """
        if now_ms < self._now_ms:
            raise WheelArgumentError(
                f"now_ms went back: advance({now_ms}) after advance({self._now_ms})"
            )
        drained: list[dict[K, int]] = []
        if self._current:
            drained.append(self._current)
            self._current = {}
        new_tick = now_ms // self._tick_ms
        if new_tick > self._tick:
            self._drain_reached_slots(new_tick, drained)
        self._tick = new_tick
        self._now_ms = now_ms

        fired: list[tuple[K, int]] = []
        for bucket in drained:
            for key, due in bucket.items():
                if due <= now_ms:
                    fired.append((key, due))
                else:
                    self._link(key, due)
        due_of = self._due
        for key, _ in fired:
            del due_of[key]
        fired.sort(key=_by_due)
        return fired

    def drain(self) -> list[tuple[K, int]]:
        """Remove and return every handle, in ``advance`` order (for re-mapping after a jump)."""
        everything = sorted(self._due.items(), key=_by_due)
        self._due.clear()
        self._current.clear()
        for slot in self._slots:
            slot.clear()
        self._bitmaps = [0] * self._levels
        self._overflow.clear()
        self._overflow_heap.clear()
        return everything

    # --- placement ----------------------------------------------------------------------------

    def _drain_reached_slots(self, new_tick: int, drained: list[dict[K, int]]) -> None:
        """Detach, in time order, every slot and overflow bucket whose start is <= new_tick.

        At level L, a slot is reached when the clock leaves the level's window (every digit
        above L changes) or when digit L of the clock reaches the slot's digit.
        """
        old_tick = self._tick
        bits, mask, slots = self._bits, self._mask, self._slots
        for level, bitmap in enumerate(self._bitmaps):
            if not bitmap:
                continue
            shift = level * bits
            above = shift + bits
            if new_tick >> above == old_tick >> above:
                reached = bitmap & ((2 << ((new_tick >> shift) & mask)) - 1)
                if not reached:
                    continue
            else:
                reached = bitmap
            self._bitmaps[level] = bitmap ^ reached
            base = level << bits
            while reached:
                low = reached & -reached
                index = base | (low.bit_length() - 1)
                drained.append(slots[index])
                slots[index] = {}
                reached ^= low
        heap = self._overflow_heap
        window = new_tick >> self._wheel_bits
        while heap and heap[0] <= window:
            drained.append(self._overflow.pop(heapq.heappop(heap)))

    def _link(self, key: K, due_ms: int) -> None:
        """Put a handle where its due time and the clock say it belongs."""
        tick = due_ms // self._tick_ms
        now_tick = self._tick
        if tick <= now_tick:
            if not self._current or due_ms < self._current_min:
                self._current_min = due_ms
            self._current[key] = due_ms
            return
        top_bit = (tick ^ now_tick).bit_length() - 1
        if top_bit >= self._wheel_bits:
            window = tick >> self._wheel_bits
            bucket = self._overflow.get(window)
            if bucket is None:
                bucket = self._overflow[window] = {}
                heapq.heappush(self._overflow_heap, window)
            bucket[key] = due_ms
            return
        level = top_bit // self._bits
        slot = (tick >> (level * self._bits)) & self._mask
        self._slots[(level << self._bits) | slot][key] = due_ms
        self._bitmaps[level] |= 1 << slot

    def _unlink(self, key: K, due_ms: int) -> None:
        """Remove a held handle from the container ``_link`` put it in (still the same one)."""
        tick = due_ms // self._tick_ms
        now_tick = self._tick
        if tick <= now_tick:
            # _current_min may now be stale-low: still a valid lower bound.
            del self._current[key]
            return
        top_bit = (tick ^ now_tick).bit_length() - 1
        if top_bit >= self._wheel_bits:
            # An emptied bucket stays until it reaches the heap's top (see next_expiry).
            del self._overflow[tick >> self._wheel_bits][key]
            return
        level = top_bit // self._bits
        slot = (tick >> (level * self._bits)) & self._mask
        bucket = self._slots[(level << self._bits) | slot]
        del bucket[key]
        if not bucket:
            self._bitmaps[level] &= ~(1 << slot)
