"""In-memory change notifications, so waiters block on events instead of polling the store.

The store is the truth; these events only say "look again". A waiter checks the store, and if
the condition does not hold yet, waits for the next change of the firing key or schedule it
cares about (or its deadline on the injected clock), then checks again. Events per key and per
schedule keep a pulse of 100 000 firings from waking every waiter 100 000 times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from schedd.aio import wait_first
from schedd.clock import Clock


class FiringEvents:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._events: dict[str, asyncio.Event] = {}

    def changed(self, key: str | None, schedule: str) -> None:
        """A firing (or, with ``key=None``, some firing of ``schedule``) changed state."""
        if not self._events:  # nobody waits: the common case, once per firing of a pulse
            return
        for topic in _topics(key, schedule):
            ev = self._events.pop(topic, None)
            if ev is not None:
                ev.set()

    async def wait_until(
        self,
        topic_key: str | None,
        topic_schedule: str | None,
        check: Callable[[], Awaitable[bool]],
        *,
        deadline_mono_ms: int,
    ) -> bool:
        """Return True once ``check()`` holds, False if the deadline passes first."""
        topics = _topics(topic_key, topic_schedule)
        while True:
            # Subscribe before checking, so a change between the check and the wait is not lost.
            events = [self._events.setdefault(t, asyncio.Event()) for t in topics]
            if await check():
                return True
            if self._clock.monotonic_ms() >= deadline_mono_ms:
                return False
            await wait_first(self._clock.sleep_until(deadline_mono_ms), *(e.wait() for e in events))


def _topics(key: str | None, schedule: str | None) -> list[str]:
    return [t for t in (key and f"k:{key}", schedule and f"s:{schedule}") if t]
