"""Small asyncio helpers shared by the loops."""

from __future__ import annotations

import asyncio
import contextlib
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
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
