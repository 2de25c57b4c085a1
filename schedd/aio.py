"""Small asyncio helpers shared by the loops."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def wait_first(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines until the first finishes; cancel and reap the rest.

    The loops use it to sleep until a deadline *or* an event, which is how they wake on events
    instead of polling.
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        # ``gather`` collects the children's CancelledErrors but not our own: a cancellation
        # of the caller during this clean-up still propagates (suppressing it would swallow it).
        await asyncio.gather(*tasks, return_exceptions=True)
