"""A bounded dict for values that are cheap to keep and dear to make again.

Used where a no-op run or an added schedule would otherwise redo the same work: encoding a
task, decoding a payload, reading a payload row. Only small values are kept (the caller gives
the size), so the cache holds little however large tasks may be; and it is emptied when full
rather than evicting one entry at a time: a working set that fits keeps every hit, one that
does not only loses the shortcut, and no bookkeeping is paid per hit.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Entries, and the largest value kept (in the caller's unit, characters so far): ~1 MB at most.
ENTRIES = 256
MAX_SIZE = 4096


class SmallCache(Generic[K, V]):
    def __init__(self, entries: int = ENTRIES, max_size: int = MAX_SIZE) -> None:
        self._entries = entries
        self._max_size = max_size
        self._values: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V, size: int) -> V:
        """Keep ``value`` if it is small enough; return it either way."""
        if size <= self._max_size:
            if len(self._values) >= self._entries:
                self._values.clear()
            self._values[key] = value
        return value

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)
