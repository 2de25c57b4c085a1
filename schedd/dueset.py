"""The handles of a timing wheel that share one due time: an *entry*, and its shapes.

A slot of :class:`~schedd.wheel.TimingWheel` is a dict from due time to an entry: the keys
due at that millisecond, in insertion order, which the wheel moves and expires as one. An
entry's shape follows its size, because a dict per due time would double the memory of
spread-out handles:

* one key: the key itself (most due times of spread-out schedules);
* up to ``FEW`` keys: a ``Few`` tuple, rebuilt on each change (at most ``FEW`` keys copied
  or compared);
* more: a ``Many`` list of dict *pages* of up to ``PAGE`` keys, inserts going to the last
  page (O(1) insert; cancel deletes from the page holding the key, one dict lookup per page:
  one up to 65 536 sharing a due time, 8 for a 500 000 pulse). Pages, because the last
  reference to a key handed out is its entry's: one dict of a 500 000 pulse freed at its last
  hand-out held the loop 11 ms; a page freed once handed out costs about 1.5 ms.

Measured against a dict entry per handle (tracemalloc, keys not counted): spread-out handles
and pulses cost the same or less (76-95 and 74-82 bytes per handle), 3 to 16 handles sharing
a due time much less (48-74 against 74-87); pairs cost more (90-97 against 82-87). Entries are
told apart from keys by their own classes, never by their shape.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import TypeAlias, TypeVar

K = TypeVar("K", bound=Hashable)

#: The most keys an entry holds as a tuple; beyond, a dict (measured: 18-36 bytes per key in a
#: tuple of 2-16, 40-116 in a dict of that size).
FEW = 16
#: The most keys in one page of a ``Many`` entry.
PAGE = 65_536


class Few(tuple[K, ...]):
    """The keys of a due time shared by a few handles (2 to ``FEW``), in insertion order;
    immutable, rebuilt on each change."""

    __slots__ = ()


class Many(list[dict[K, None]]):
    """The keys of a due time shared by many handles: pages of keys, in insertion order."""

    __slots__ = ()


#: The handles sharing one due time (see the module docstring).
Entry: TypeAlias = "K | Few[K] | Many[K]"
#: Due time -> entry: a slot, ``_current``, an overflow bucket.
Entries: TypeAlias = "dict[int, Entry[K]]"


def add(entries: Entries[K], due_ms: int, key: K) -> None:
    """Add ``key`` (not held at ``due_ms`` yet) to the entry of ``due_ms``, growing its shape."""
    entry = entries.setdefault(due_ms, key)
    if entry is key:  # the first key of its due time
        return
    if isinstance(entry, Many):
        if len(entry[-1]) < PAGE:
            entry[-1][key] = None
        else:
            entry.append({key: None})
    elif not isinstance(entry, Few):
        entries[due_ms] = Few((entry, key))
    elif len(entry) < FEW:
        entries[due_ms] = Few((*entry, key))
    else:
        entries[due_ms] = Many([dict.fromkeys((*entry, key))])


def keys(entry: Few[K] | Many[K]) -> Iterator[K]:
    return _page_by_page(entry) if isinstance(entry, Many) else iter(entry)


def _page_by_page(pages: Many[K]) -> Iterator[K]:
    """A detached entry's keys; each page is let go once walked (see ``Many``)."""
    pages.reverse()
    while pages:
        yield from pages.pop()


def remove(entries: Entries[K], due_ms: int, key: K) -> None:
    """Remove ``key`` from the entry of ``due_ms``, and the entry once empty.

    Only in ``_current`` may the entry lack the key: its own was detached into a round and
    this is a newer one at the same due time.
    """
    entry = entries[due_ms]
    if isinstance(entry, Many):
        for at, page in enumerate(entry):
            if key in page:
                del page[key]
                if not page:
                    del entry[at]
                break
        if entry:
            return
    elif isinstance(entry, Few):
        if key in entry:
            at = entry.index(key)
            rest = entry[:at] + entry[at + 1 :]
            entries[due_ms] = rest[0] if len(rest) == 1 else Few(rest)
        return
    elif entry != key:
        return
    del entries[due_ms]
