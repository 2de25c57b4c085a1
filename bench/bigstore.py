"""schedd scenario 4 at scale: a store of N schedules (1 000 000 in the full run), built through
the admin API, its RSS and its start-up.

**How the store is made.** Through the admin socket, as an application that owns many schedules
would: ``schedules.add_many`` with 1 000 schedules per request (one transaction each), pipelined
on :data:`CONNECTIONS` connections with :data:`WINDOW` requests in flight on each. The daemon's
config holds no schedules, so each later start reads the store alone: the start-up figure is
what a store of this size costs, not the parse of a million-table config file.

The schedules are what a big deployment looks like: half daily crons at minutes spread over the
day, half intervals of 1 to 2 days (on multiples of their period from the epoch, so their
occurrences are spread too), each running ``/bin/true``. A few fire while the benchmark runs
(about 10 a second at a million), as they would in production.

Figures: READY of an empty daemon and its RSS; the add rate (N / seconds from the first request
sent to the last answer read) and RSS once all are added; then ``restarts`` times SIGTERM and
start again on the same store: spawn to READY, and RSS (now and peak) once ``status`` answers.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from bench.common import Daemon, config, pipeline, rss_bytes, running, workdir

TIMEOUT_S = 1800
#: Schedules per ``schedules.add_many`` request (the daemon's cap).
PER_REQUEST = 1000
CONNECTIONS = 4
#: Requests in flight per connection: enough that the daemon never waits for the client, few
#: enough that ~100 KB requests do not pile up in socket buffers.
WINDOW = 4

Request = tuple[str, dict[str, Any]]


DAY_MS = 86_400_000


def _cron_minute(i: int) -> int:
    """The minute of the day of odd schedule ``i``'s daily cron."""
    return (i // 2) % 1440


def _interval_s(i: int) -> int:
    """The period of even schedule ``i``, 1 to 2 days."""
    return 86_400 + (i * 7919) % 86_400


def mixed_spec(i: int) -> dict[str, Any]:
    """Schedule ``i``: a daily cron at a minute spread over the day, or a 1-2 day interval."""
    if i % 2:
        minute = _cron_minute(i)
        return {"cron": f"{minute % 60} {minute // 60} * * *", "command": ["/bin/true"]}
    return {"every": f"{_interval_s(i)}s", "command": ["/bin/true"]}


def mixed_next_ms(i: int, now_ms: int) -> int:
    """When schedule ``i`` next fires after ``now_ms`` (UTC, no jitter), by arithmetic rather
    than croniter: the floor of adding (:func:`bench.floors.schedd_adds`) stores keys spread
    over the next two days as schedd's are, since scattered index keys cost more to insert
    than ascending ones."""
    if i % 2:
        at = now_ms - now_ms % DAY_MS + _cron_minute(i) * 60_000
        return at if at > now_ms else at + DAY_MS
    period_ms = _interval_s(i) * 1000
    return (now_ms // period_ms + 1) * period_ms


class AddRequests(Sequence[Request]):
    """The ``add_many`` requests for schedules ``0 .. n-1`` (``spec(i)`` each), each built when
    it is sent: a million entries built up front would be the harness's largest allocation by
    far."""

    def __init__(
        self,
        n: int,
        spec: Callable[[int], dict[str, Any]] = mixed_spec,
        span: range | None = None,
    ) -> None:
        self._n = n
        self._spec = spec
        self._span = span if span is not None else range(0, n, PER_REQUEST)

    def __len__(self) -> int:
        return len(self._span)

    @overload
    def __getitem__(self, index: int) -> Request: ...
    @overload
    def __getitem__(self, index: slice) -> AddRequests: ...
    def __getitem__(self, index: int | slice) -> Request | AddRequests:
        if isinstance(index, slice):
            return AddRequests(self._n, self._spec, self._span[index])
        start = self._span[index]
        entries = [
            {"name": f"s{i}", "spec": self._spec(i)}
            for i in range(start, min(start + PER_REQUEST, self._n))
        ]
        return "schedules.add_many", {"schedules": entries}

    def __iter__(self) -> Iterator[Request]:
        return (self[i] for i in range(len(self)))


def bigstore(n: int, restarts: int) -> dict[str, Any]:
    with workdir("big") as root:
        daemon = Daemon(root, config(workers=2))
        with running(daemon):
            empty_ready = daemon.start()
            empty = _settled(daemon)
            add_s = pipeline(daemon.socket, AddRequests(n), connections=CONNECTIONS, window=WINDOW)
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
        "empty_rss": empty["rss"],
        "add_s": add_s,
        "rate": n / max(add_s, 1e-9),
        "build_rss": build["rss"],
        "build_peak_rss": build["peak_rss"],
        "bytes_per_schedule": (build["rss"] - empty["rss"]) / n,
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
