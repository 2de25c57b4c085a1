"""A pure hierarchical timing wheel: which handles are due, and when to look next.

The wheel answers two questions for the dispatcher's tickless driver: *what is due now*
(``advance``) and *how long may I sleep* (``next_expiry``). It reads no clock and awaits
nothing; the driver sleeps until ``next_expiry()``, reads the monotonic clock and calls
``advance(now)``. It holds only light handles, ``(key, due_ms)``, never payloads (DESIGN §4), so
its memory is under a hundred bytes per handle beyond the key itself, whatever the task carries.

Why a wheel and not a heap
--------------------------
A binary heap costs O(log n) per insert and needs lazy deletion (or O(n)) to cancel. The
dispatcher inserts a 500 000-firing pulse at once, and run timeouts / idle deadlines are
almost always cancelled before they expire. A wheel makes both insert and cancel O(1): a
handle goes into a *slot* picked by arithmetic on its due time, and cancelling deletes it from
that slot.

Entries: one per due time, not per handle
-----------------------------------------
A slot is a dict from due time to an *entry*: the keys due at that millisecond, in insertion
order (:mod:`schedd.dueset`: their shapes and why). The wheel moves and expires entries, not
handles, so a pulse of 500 000 handles sharing a due time costs a cascade one dict assignment
(relinking the handles one by one stopped the daemon's loop for 150-200 ms, two or three times
before the pulse). Cancel finds the entry from the key's due time (``_due``) and deletes the
key from it.

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

A due time ``d`` (in ticks), when the wheel's clock is at tick ``c < d``, goes to the level of
the **highest digit in which d and c differ**, and to the slot given by ``d``'s digit there::

    level = (bit_length(d ^ c) - 1) // b        slot = (d >> (level * b)) & (slots - 1)

(tokio's timer wheel picks its level the same way). Placement is a function of ``(d, c)``
alone, which gives the wheel its invariants:

* every handle with the same due time lives in the same entry, so moving an entry keeps ties
  in insertion order;
* an entry's slot can be recomputed from its due time, so cancel needs no back-pointer;
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
a slot reaching its start is only a *cascade point*: each due time in it is compared exactly
against ``now``; the due entries are expired and the rest are re-placed relative to the new
clock, always at a strictly lower level (they now share digit L with ``c``). So ``advance``
hands out exactly the handles with ``due <= now`` -- never early, and with an advance at the
due millisecond never late, whatever ``tick_ms`` is. An entry is moved at most
``levels + 1`` times in its life.

Entries whose tick the clock has reached wait in ``_current``: with ``tick_ms > 1`` those of
the current tick not due yet (later advances filter them again), and handles inserted with a
due time already passed, which expire at the next advance, even one with an unchanged ``now``.

Handing out: rounds, at most ``limit`` at a time
------------------------------------------------
Each advance that finds due entries detaches them into a *round*, sorted by due time, and
hands out up to ``limit`` handles; what is left stays in the wheel (still counted, still
cancellable) and comes out of later advances. Rounds are served newest first: an advance
hands out what fell due since the last one before the rest of an older round, so a consumer
that takes a pulse in chunks makes everything else wait for one chunk, not for the pulse (the
dispatcher commits 500 schedules per chunk). Without ``limit`` an advance empties every round,
and the handles come out sorted by due time, ties in insertion order.

A detached entry is never changed again (the round walks it with an iterator). Cancelling one
of its keys only drops the key from ``_due``, and the round skips keys whose ``_due`` is gone
or moved. A key inserted again at the very same due time goes to a new entry in ``_current``,
so the next advance puts it in a newer round, which is emptied before the old one resumes:
the old round finds it gone from ``_due``, and it comes out once, as a fresh insertion.

next_expiry: never later, cheap, tickless
-----------------------------------------
``next_expiry`` returns, while rounds are left or ``_current`` is not empty, a lower bound of
their due times (``<= now_ms``: "advance now" for the driver, unless only ``tick_ms`` stragglers
are left); else the start of the earliest non-empty slot (first set bit of the first non-empty
level's bitmap), or the start of the earliest overflow window. Each is ``<=`` every due time it
stands for, so the driver never oversleeps. It may be earlier: for a coarse slot it is the
cascade point, after which ``next_expiry`` is finer. A handle 10 minutes out therefore costs
the driver a handful of wake-ups (one per level it cascades through), all shared with every
other handle in those slots; an idle wheel costs nothing, and advancing an empty wheel by an
hour is O(levels). Cancelling clears a slot's bit when the slot empties, so bitmaps never
point at empty slots.

The overflow
------------
Due times beyond the top level (those that differ from ``c`` above the top digit) go to one
bucket per top-level window, a dict of entries keyed by window number, plus a heap of window
numbers. Inserting into an existing bucket is O(1); a new bucket costs one O(log w) heap push.
When ``advance`` crosses into a window it pops that bucket and re-places its entries, exactly
like a cascade. The scheduler keeps occurrences beyond its load horizon in SQLite, so the
overflow stays small; it exists so that any due time, however far, stays correct. Buckets
emptied by cancel are dropped when they reach the heap's top.

Complexity
----------
``insert`` and ``cancel``: O(1) (a few integer operations and dict updates; O(log w) once per
new overflow window; a scan of at most ``_FEW`` keys in a small entry, a lookup per page in a
large one). ``next_expiry``: O(levels + rounds left). ``advance``: O(levels + slots drained +
*due times* moved + g log g for the g due times it expires) to move the clock, never
proportional to elapsed ticks nor to the handles sharing a due time, plus O(handles handed out
+ keys skipped). ``drain``: O(n log n). The wheel is not thread-safe; the driver owns it.

The wheel's clock starts at ``now_ms >= 0`` (a monotonic clock's value) so that tick numbers
are non-negative and ``d ^ c`` is meaningful.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from operator import itemgetter
from typing import Generic, TypeVar

from schedd import dueset
from schedd.errors import InvalidArgument

K = TypeVar("K", bound=Hashable)

#: ``_index`` answers for ticks the clock has reached, and for the overflow.
_CURRENT = -1
_OVERFLOW = -2

_by_time = itemgetter(0)
_by_due = itemgetter(1)


class _Round(Generic[K]):
    """The entries one advance expired, not all handed out yet."""

    __slots__ = ("due", "entries", "walking")

    def __init__(self, entries: list[tuple[int, dueset.Entry[K]]]) -> None:
        #: ``(due, entry)``, latest due first: the next one is at the end.
        self.entries = entries
        #: The keys left of a shared entry begun (``None`` between entries), due at ``due``.
        self.walking: Iterator[K] | None = None
        self.due = 0

    def earliest(self) -> int:
        """A lower bound of the due times left."""
        return self.due if self.walking is not None else self.entries[-1][0]


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
        #: Every handle held, in insertion order (a re-insert moves the key to the end),
        #: including those expired into a round and not handed out yet.
        self._due: dict[K, int] = {}
        #: Entries whose tick is <= the clock's: due at the next advance, or (tick_ms > 1)
        #: later within the current tick.
        self._current: dueset.Entries[K] = {}
        #: A lower bound of the due times in ``_current`` (exact after each advance).
        self._current_min = 0
        #: Slot ``s`` of level ``L`` is ``_slots[(L << bits) | s]``; bit ``s`` of
        #: ``_bitmaps[L]`` is set exactly when that slot is non-empty.
        self._slots: list[dueset.Entries[K]] = [{} for _ in range(levels << self._bits)]
        self._bitmaps = [0] * levels
        #: Overflow window number -> bucket; each key is in ``_overflow_heap`` exactly once.
        self._overflow: dict[int, dueset.Entries[K]] = {}
        self._overflow_heap: list[int] = []
        #: Expired entries not handed out yet, oldest round first; none is empty.
        self._rounds: list[_Round[K]] = []

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
        dueset.add(self._entries_for(due_ms), due_ms, key)

    def cancel(self, key: K) -> bool:
        """Forget ``key``; False if it was not held (already handed out, cancelled or never
        added). A key expired into a round but not handed out yet is still held."""
        due = self._due.pop(key, None)
        if due is None:
            return False
        self._unlink(key, due)
        return True

    def next_expiry(self) -> int | None:
        """When the driver must call ``advance`` next: never later than the earliest due time.

        ``None`` when empty. May be earlier than any due time (a coarse slot's cascade point).
        A value ``<= now_ms`` means "advance now": something is due already (possibly the rest
        of a round), or (rarely) a cancel left a stale lower bound that the next ``advance``
        refreshes.
        """
        if not self._due:
            self._rounds.clear()  # they can only hold keys cancelled or handed out
            return None
        lows = [round_.earliest() for round_ in self._rounds]
        if self._current:
            lows.append(self._current_min)
        if lows:
            return min(lows)
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

    def advance(self, now_ms: int, limit: int | None = None) -> list[tuple[K, int]]:
        """Move the clock to ``now_ms`` and hand out due handles, at most ``limit`` of them.

        What fell due at this advance comes first, then what earlier advances left; each
        advance's handles sorted by due time, equal due times in insertion order; never a
        handle that is not due. Only slots whose start has been reached are touched, found
        through the bitmaps, and they move one entry per due time, so moving the clock costs
        neither the time passed nor the handles sharing a due time.
        """
        if now_ms < self._now_ms:
            raise WheelArgumentError(
                f"now_ms went back: advance({now_ms}) after advance({self._now_ms})"
            )
        if limit is not None and limit < 1:
            raise WheelArgumentError(f"limit must be >= 1, got {limit}")
        self._expire(now_ms)
        return self._hand_out(limit)

    def drain(self) -> list[tuple[K, int]]:
        """Remove and return every handle, sorted by due time, ties in insertion order (for
        re-mapping after a clock jump)."""
        everything = sorted(self._due.items(), key=_by_due)
        self._due.clear()
        self._current.clear()
        for slot in self._slots:
            slot.clear()
        self._bitmaps = [0] * self._levels
        self._overflow.clear()
        self._overflow_heap.clear()
        self._rounds.clear()
        return everything

    # --- expiry -------------------------------------------------------------------------------

    def _expire(self, now_ms: int) -> None:
        """Move the clock, detaching every entry due by ``now_ms`` into a new round."""
        reached: list[tuple[int, dueset.Entry[K]]] = []
        if self._current:
            kept: dueset.Entries[K] = {}
            for due, entry in self._current.items():
                if due <= now_ms:
                    reached.append((due, entry))
                else:
                    kept[due] = entry
            self._current = kept
            self._current_min = min(kept, default=0)
        new_tick = now_ms // self._tick_ms
        if new_tick > self._tick:
            drained = self._detach_reached_slots(new_tick)
            self._tick = new_tick
            for entries in drained:
                for due, entry in entries.items():
                    if due <= now_ms:
                        reached.append((due, entry))
                    else:  # a cascade: the whole entry moves down (no other entry has its due)
                        self._entries_for(due)[due] = entry
        self._now_ms = now_ms
        if reached:
            reached.sort(key=_by_time, reverse=True)
            self._rounds.append(_Round(reached))

    def _hand_out(self, limit: int | None) -> list[tuple[K, int]]:
        """Take up to ``limit`` handles from the rounds, newest round first."""
        out: list[tuple[K, int]] = []
        room = -1 if limit is None else limit  # counts down to 0; from -1 it never gets there
        due_of = self._due
        rounds = self._rounds
        while rounds and room:
            round_ = rounds[-1]
            if round_.walking is None:
                due, entry = round_.entries.pop()
                if isinstance(entry, (dueset.Few, dueset.Many)):
                    round_.due, round_.walking = due, dueset.keys(entry)
                elif due_of.get(entry) == due:  # one key: no iterator to allocate
                    del due_of[entry]
                    out.append((entry, due))
                    room -= 1
            if round_.walking is not None:
                due = round_.due
                for key in round_.walking:  # resumes where the last hand-out stopped
                    if due_of.get(key) != due:
                        continue  # cancelled or moved since the round began
                    del due_of[key]
                    out.append((key, due))
                    room -= 1
                    if not room:
                        break
                else:
                    round_.walking = None
            if round_.walking is None and not round_.entries:
                rounds.pop()
        return out

    def _detach_reached_slots(self, new_tick: int) -> list[dueset.Entries[K]]:
        """Detach, in time order, every slot and overflow bucket whose start is <= new_tick.

        At level L, a slot is reached when the clock leaves the level's window (every digit
        above L changes) or when digit L of the clock reaches the slot's digit.
        """
        drained: list[dueset.Entries[K]] = []
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
        return drained

    # --- placement ----------------------------------------------------------------------------

    def _index(self, tick: int) -> int:
        """Where a tick belongs now: ``_CURRENT``, ``_OVERFLOW`` or its slot's index."""
        now_tick = self._tick
        if tick <= now_tick:
            return _CURRENT
        top_bit = (tick ^ now_tick).bit_length() - 1
        if top_bit >= self._wheel_bits:
            return _OVERFLOW
        level = top_bit // self._bits
        return (level << self._bits) | ((tick >> (level * self._bits)) & self._mask)

    def _entries_for(self, due_ms: int) -> dueset.Entries[K]:
        """The entries a due time belongs with, marked as about to hold it."""
        tick = due_ms // self._tick_ms
        index = self._index(tick)
        if index >= 0:
            self._bitmaps[index >> self._bits] |= 1 << (index & self._mask)
            return self._slots[index]
        if index == _CURRENT:
            if not self._current or due_ms < self._current_min:
                self._current_min = due_ms
            return self._current
        window = tick >> self._wheel_bits
        bucket = self._overflow.get(window)
        if bucket is None:
            bucket = self._overflow[window] = {}
            heapq.heappush(self._overflow_heap, window)
        return bucket

    def _unlink(self, key: K, due_ms: int) -> None:
        """Remove a held handle from the entry it is in, if not detached into a round."""
        tick = due_ms // self._tick_ms
        index = self._index(tick)
        if index >= 0:
            slot = self._slots[index]
            dueset.remove(slot, due_ms, key)
            if not slot:
                self._bitmaps[index >> self._bits] &= ~(1 << (index & self._mask))
        elif index == _OVERFLOW:
            # An emptied bucket stays until it reaches the heap's top (see next_expiry).
            dueset.remove(self._overflow[tick >> self._wheel_bits], due_ms, key)
        elif due_ms in self._current:  # else detached: the round skips the key
            # _current_min may now be stale-low: still a valid lower bound.
            dueset.remove(self._current, due_ms, key)
