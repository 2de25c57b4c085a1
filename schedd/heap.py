"""Keeping CPython's cycle collector off the firing path.

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
"""

from __future__ import annotations

import gc


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
