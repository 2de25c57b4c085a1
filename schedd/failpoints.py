"""Named failpoints: let a test stop the daemon exactly where it wants to, instead of hoping.

``SCHEDD_FAILPOINTS="timer_wake=hang:5,after_commit=kill:3"`` arms failpoints by name; each
action fires on the Nth time its point is reached (default: the first):

* ``hang``: the coroutine that reached the point waits forever (the event loop keeps running),
  which is how a test wedges the dispatch loop to prove the watchdog notices;
* ``kill``: the process SIGKILLs itself, which is how crash tests land inside a window.

Unset (production), :func:`hit` is one dictionary lookup that finds nothing. The variable is read
once, when the daemon starts (:func:`arm_from_env`); it is never passed on to tasks (tasks get a
built environment, not the daemon's).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from schedd.errors import InvalidArgument

log = logging.getLogger("schedd.failpoints")

ENV = "SCHEDD_FAILPOINTS"
_ACTIONS = ("hang", "kill")


@dataclass
class _Armed:
    action: str
    on_hit: int
    hits: int = 0


_armed: dict[str, _Armed] = {}


def parse(spec: str) -> dict[str, _Armed]:
    armed: dict[str, _Armed] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        kind, _, count = action.partition(":")
        if not name or kind not in _ACTIONS or (count and not count.isdigit()) or count == "0":
            raise InvalidArgument(
                f"{ENV}: {item!r} is not NAME=ACTION[:N] with ACTION one of {', '.join(_ACTIONS)}"
            )
        armed[name] = _Armed(kind, int(count or 1))
    return armed


def arm_from_env(environ: Mapping[str, str] = os.environ) -> None:
    _armed.clear()
    _armed.update(parse(environ.get(ENV, "")))
    for name, armed in _armed.items():
        log.warning("failpoint armed: %s=%s:%d (testing only)", name, armed.action, armed.on_hit)


async def hit(name: str) -> None:
    """Pass the point ``name``; if it is armed and this is its Nth pass, act."""
    armed = _armed.get(name)
    if armed is None:
        return
    armed.hits += 1
    if armed.hits != armed.on_hit:
        return
    log.warning("failpoint %s: %s", name, armed.action)
    if armed.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.Event().wait()
