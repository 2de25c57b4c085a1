"""schedd scenario 4 at scale: a store of N schedules (1 000 000 in the full run), its RSS and
its start-up.

**How the store is made.** The fastest honest route on this machine is the config file: the
daemon is started once on a config holding the N schedules, and its reconcile writes them
(~3 700 schedules/s here, against ~1 100-1 400/s for ``schedules.add`` over the admin socket,
pipelined on 4-16 connections, which would take 12-15 minutes for a million). Because the
schedules come from the config, every later start parses that file again and reconciles it
against the store (unchanged: nothing is written), which is what a config-managed deployment
of this size pays at each start; so the start-up figure includes it.

The schedules are what a big deployment looks like: half daily crons at minutes spread over the
day, half intervals of 1 to 2 days (on multiples of their period from the epoch, so their
occurrences are spread too), each running ``/bin/true``. A few fire while the benchmark runs
(about 10 a second at a million), as they would in production.

Figures: READY of the first start (the build: reconcile of N new schedules, hence the add rate
against an empty daemon's READY), then ``restarts`` times SIGTERM and start again on the same
store and config: spawn to READY, and RSS (now and peak) once ``status`` answers.
"""

from __future__ import annotations

import signal
from typing import Any

from bench.common import Daemon, config, rss_bytes, running, workdir

TIMEOUT_S = 1800


def mixed_schedules(n: int) -> str:
    """N schedule tables: daily crons spread over the day's minutes, and 1-2 day intervals."""
    out = []
    for i in range(n):
        if i % 2:
            minute = (i // 2) % 1440
            trigger = f'cron = "{minute % 60} {minute // 60} * * *"'
        else:
            trigger = f'every = "{86_400 + (i * 7919) % 86_400}s"'
        out.append(f'[schedules.s{i}]\n{trigger}\ncommand = ["/bin/true"]\n')
    return "".join(out)


def bigstore(n: int, restarts: int) -> dict[str, Any]:
    with workdir("big0") as root, running(Daemon(root, config(workers=2))) as empty:
        empty_ready = empty.start()
        empty_state = _settled(empty)
    with workdir("big") as root:
        daemon = Daemon(root, config(mixed_schedules(n), workers=2))
        with running(daemon):
            build_ready = daemon.start(timeout_s=TIMEOUT_S)
            build = _settled(daemon)
            ready: list[float] = []
            after: list[dict[str, int]] = []
            for _ in range(restarts):
                daemon.kill(signal.SIGTERM)
                ready.append(daemon.start(timeout_s=TIMEOUT_S))
                after.append(_settled(daemon))
            daemon.kill(signal.SIGTERM)
        store_bytes = sum(p.stat().st_size for p in daemon.db.parent.glob("schedd.db*"))
    if any(s["schedules"] != n for s in (build, *after)):
        raise RuntimeError(f"store of {n}: status counted {[build, *after]}")
    return {
        "n": n,
        "empty_ready_s": empty_ready,
        "empty_rss": empty_state["rss"],
        "build_ready_s": build_ready,
        "rate": n / max(build_ready - empty_ready, 1e-9),
        "build_rss": build["rss"],
        "build_peak_rss": build["peak_rss"],
        "bytes_per_schedule": (build["rss"] - empty_state["rss"]) / n,
        "ready_s": ready,
        "rss": [a["rss"] for a in after],
        "peak_rss": [a["peak_rss"] for a in after],
        "wheel_handles": [a["wheel_handles"] for a in after],
        "store_bytes": store_bytes,
    }


def _settled(daemon: Daemon) -> dict[str, int]:
    """RSS once the daemon answers ``status`` (its loop serves), with the store's count."""
    st = daemon.call("status")
    return {
        "schedules": st["schedules"],
        "wheel_handles": st["wheel"]["handles"],
        "rss": rss_bytes(daemon.pid),
        "peak_rss": rss_bytes(daemon.pid, "VmHWM"),
    }
