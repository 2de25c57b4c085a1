"""Lanes: which lane's waiting firing takes the next free worker slot.

A lane is a share of the ``[workers] max`` slots (DESIGN §5, issue "lanes"). Its ``reserved``
slots belong to it alone: they stay idle rather than run another lane's work, so a critical
schedule starts on time however deep the bulk backlog is. The slots nobody reserved are
*shared*: a lane at or above its reservation competes for them by ``weight``.

The sharing is stride scheduling over starts. Each lane carries a *pass*; a start in a shared
slot advances the chosen lane's pass by ``LCM(weights) / weight`` (integers, so no float drift),
and the lane with the lowest pass wins the next shared slot. Over many picks the starts of
saturated lanes follow their weights, and a small weight still gets its turn (a rule based on
current occupancy alone would starve a weight-1 lane next to a weight-3 one on two slots). A
lane that was idle re-enters at the current pass instead of its old one, so idleness banks no
credit: its share went to the others while it had no work, and it does not take it back later.
Starts in a lane's own reserved slots are free: only the spare capacity is shared by weight.

Each start remembers which kind of slot it took, and gives back that kind when it ends. Were
slots attributed by counting (a lane's runs beyond its reservation are "shared"), the end of
any of a lane's runs would free its shared slot, so a lane with a reservation would hold
shared slots for less time than the others and get less than its weight.

This module is pure bookkeeping (no clock, no I/O) so the policy is unit-tested exhaustively;
the runner asks it, keeps the queues, and reports each start's end.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple

from schedd.record import record
from schedd.store.records import LaneDepth

#: The lane of schedules and submissions that name none; it always exists.
DEFAULT_LANE = "default"


@record
class Lane:
    #: Slots only this lane may use.
    reserved: int = 0
    #: Its share of the unreserved slots, relative to the other lanes with work.
    weight: int = 1


class Start(NamedTuple):
    """A start the allocator allowed; handed back to :meth:`Allocator.finished` when it ends."""

    lane: str
    #: On a shared slot; False: on one of the lane's reserved slots.
    shared: bool


def with_default(lanes: Mapping[str, Lane]) -> dict[str, Lane]:
    """``lanes`` plus ``default`` (unreserved, weight 1) unless it is configured."""
    return {DEFAULT_LANE: Lane(), **lanes}


def every_lane(depths: Iterable[LaneDepth]) -> list[LaneDepth]:
    """Queue depths by lane name, ``default`` always among them (an idle daemon reports 0, not
    nothing): what ``status``, the metrics and ``STATUS=`` show."""
    by_lane = {d.lane: d for d in depths}
    by_lane.setdefault(DEFAULT_LANE, LaneDepth(DEFAULT_LANE, 0, 0, None))
    return [by_lane[name] for name in sorted(by_lane)]


class Allocator:
    """Counts each lane's running firings and decides which lane starts next."""

    def __init__(self, lanes: Mapping[str, Lane], capacity: int) -> None:
        self._lanes = with_default(lanes)
        reserved = sum(lane.reserved for lane in self._lanes.values())
        if reserved > capacity:
            raise ValueError(f"lanes reserve {reserved} slots, more than the {capacity} there are")
        self._shared = capacity - reserved
        scale = math.lcm(*(lane.weight for lane in self._lanes.values()))
        self._stride = {name: scale // lane.weight for name, lane in self._lanes.items()}
        self._pass = dict.fromkeys(self._lanes, 0)
        #: The pass of the latest shared pick: where a lane coming back from idle re-enters.
        self._now = 0
        #: Runs on the lane's reserved slots, and on shared slots, per lane.
        self._own: Counter[str] = Counter()
        self._borrowed: Counter[str] = Counter()

    @property
    def names(self) -> list[str]:
        """Every configured lane, ``default`` included."""
        return sorted(self._lanes)

    def lane_of(self, name: str) -> str:
        """The lane a firing runs in: its own, or ``default`` if that lane is not configured."""
        return name if name in self._lanes else DEFAULT_LANE

    def running(self, lane: str) -> int:
        return self._own[lane] + self._borrowed[lane]

    def next(self, waiting: Collection[str]) -> Start | None:
        """Which lane starts a firing now, among ``waiting`` (lanes with work); None: none may.

        The start holds its slot until it is given to :meth:`finished`.
        """
        own = [n for n in waiting if self._own[n] < self._lanes[n].reserved]
        if own:
            lane = min(own, key=self._order)
            self._own[lane] += 1
            return Start(lane, shared=False)
        if not waiting or self._borrowed.total() >= self._shared:
            return None
        lane = min(waiting, key=self._order)
        self._now = self._order(lane)[0]
        self._pass[lane] = self._now + self._stride[lane]
        self._borrowed[lane] += 1
        return Start(lane, shared=True)

    def finished(self, start: Start) -> None:
        held = self._borrowed if start.shared else self._own
        held[start.lane] -= 1
        if held[start.lane] <= 0:
            del held[start.lane]

    def _order(self, lane: str) -> tuple[int, str]:
        """Its pass, never behind the current one (idle time banks no credit); names break ties."""
        return max(self._pass[lane], self._now), lane
