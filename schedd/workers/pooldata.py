"""A worker pool's plain data: the :class:`PoolSettings` it is given, the :class:`PoolStats`
it reports.

Apart from :mod:`schedd.workers.pool`, which exports both, because every part of the pool
reads the settings (the :class:`~schedd.workers.launch.Launcher`, the
:class:`~schedd.workers.fleet.Fleet` and the runs) and the fleet makes the stats, while they
import none of it. The settings are checked once, when they are made.
"""

from __future__ import annotations

from collections.abc import Mapping

from schedd.errors import InvalidArgument
from schedd.record import record


@record
class PoolSettings:
    #: The application's interpreter (a virtualenv's ``bin/python``); it needs no schedd.
    python: str
    #: Prepended to the workers' imports as ``PYTHONPATH`` (replacing one in ``env``).
    pythonpath: tuple[str, ...]
    #: The workers' whole environment (the runs' ``SCHEDD_*`` variables are set per run).
    env: Mapping[str, str]
    cwd: str | None
    min_workers: int
    max_workers: int
    max_tasks_per_worker: int | None
    max_worker_rss_bytes: int | None
    start_timeout_ms: int
    idle_timeout_ms: int
    output_tail_bytes: int
    #: Between closing a retiring worker's channel and SIGKILL.
    retire_grace_ms: int = 5_000

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            raise InvalidArgument(
                f"workers need 0 <= min <= max and max >= 1, got min={self.min_workers} "
                f"max={self.max_workers}"
            )
        for name in ("max_tasks_per_worker", "max_worker_rss_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidArgument(f"{name} must be >= 1 or unset, got {value}")
        for name in ("start_timeout_ms", "idle_timeout_ms"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("output_tail_bytes", "retire_grace_ms"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must be >= 0, got {getattr(self, name)}")


@record
class PoolStats:
    #: Workers starting, idle or busy (not those on their way out).
    size: int
    idle: int
    busy: int
    starting: int
    #: Processes ever launched.
    spawned: int
    #: Retired after N tasks, above the RSS limit, or at their own request.
    recycled: int
    #: Retired after idling above ``min_workers``.
    shrunk: int
    #: Lost to a crash, a kill (timeout, stop, protocol) or an exit: replaced when that left
    #: the pool below ``min_workers``, else simply gone (a new one starts when a run needs it).
    replaced: int
    failed_starts: int
    protocol_errors: int
    #: Pids of the workers counted in ``size``.
    pids: tuple[int, ...]
