"""The daemon's heap: the cycle collector kept off the firing path, large blocks given back.

**The cycle collector.**

A cycle collection stops the event loop while it walks the objects of the generations it
collects, and a full (oldest-generation) collection walks every tracked object the process has.
Measured on a daemon started with a 110 000-schedule config: full collections during a pulse
took 370-630 ms each, and each was a critical-lane firing that many milliseconds late; while the
same file was parsed they added 2.2 s to a 5.3 s load.

So the daemon builds its long-lived state (the parsed config, the store, the pool, the admin
server) with the collector paused (:func:`hold`), and once it is built (:func:`settle`, before
``READY`` and after each reload) collects what is garbage and then *freezes* the survivors into
the permanent generation that collections skip (``gc.freeze``). From then on a collection walks
only what was made since: tickets, runs, requests. The schedules themselves are not kept in
memory at all once reconciled (the store has them, :meth:`schedd.config.Config.settled`), so the
frozen heap is small and what a reload freezes stays small too.

The cost: an object frozen while alive that later becomes part of a garbage *cycle* is never
collected. What is alive at ``settle`` is the daemon's own structure (alive until exit anyway)
plus whatever firings are in flight at a reload: a bounded amount per reload, not per firing.

**Large blocks.** glibc serves a block below its mmap threshold (128 KiB at first, and raised
to as much as 32 MiB each time a mapped block is freed) from the heap, and a heap gives back
only its top: a freed 64 KiB request line or payload between two small survivors stays
resident. Adding 3 000 schedules with tasks at the 64 KiB payload cap left 8-21 MB of RSS
behind, a different amount each run, against DESIGN's promise that memory does not follow
payload sizes (3 MB with the threshold fixed, every run). :func:`return_large_blocks` fixes it
at :data:`LARGE_BLOCK`, so every block that large has pages of its own, unmapped when freed.
"""

from __future__ import annotations

import ctypes
import gc

#: ``M_MMAP_THRESHOLD`` in glibc's ``malloc.h``.
_M_MMAP_THRESHOLD = -3
#: Blocks from this size up are mapped on their own and unmapped when freed: half the default
#: payload cap, so tasks near it, their request lines and their encodings all are.
LARGE_BLOCK = 32 * 1024


def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Map blocks of ``threshold`` bytes and more on their own (see the module); False where
    the C library has no such setting (it is glibc's), which costs memory, not correctness."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def hold() -> None:
    """Pause cycle collection while long-lived state is being built; :func:`settle` resumes it."""
    gc.disable()


def settle() -> None:
    """Long-lived state is built: collect the garbage building it left (only what was made
    since the last freeze is walked), freeze the rest out of every later collection, and
    resume collecting."""
    gc.collect()
    gc.freeze()
    gc.enable()
