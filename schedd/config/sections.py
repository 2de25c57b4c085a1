"""What a valid ``schedd.toml`` becomes: frozen dataclasses, one per section.

Every field is already converted (durations in ms, sizes in bytes, paths resolved against the
config file's directory), so code that reads a :class:`Config` never parses or guesses units.
Defaults live here, on the fields; ``docs/configuration.md`` states the same values to users.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from schedd import model
from schedd.catchup import CatchupSettings
from schedd.lanes import Lane
from schedd.payload import DEFAULT_MAX_PAYLOAD
from schedd.ratelimit import Rate

#: ``sockaddr_un.sun_path`` is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path
    shutdown_grace_ms: int = 30_000


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    synchronous: Literal["full", "normal"] = "full"
    busy_timeout_ms: int = 5_000
    #: How far ahead the loader arms the timing wheel; later occurrences stay in SQLite.
    horizon_ms: int = 60_000


@dataclass(frozen=True)
class AdminConfig:
    socket: Path
    mode: int = 0o660
    group: str | None = None
    max_request_bytes: int = 1024 * 1024
    idle_timeout_ms: int = 300_000
    max_connections: int = 64
    #: ``[admin] readers`` / ``operators`` entries as written (``schedd.admin.access`` forms),
    #: each checked against this host's user database when the file was read.
    readers: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkersConfig:
    #: Python worker processes kept warm even when idle.
    min: int = 0
    #: Tasks running at once, and the most Python worker processes.
    max: int = 4
    #: The interpreter Python workers run (a virtualenv's ``bin/python`` for its packages).
    python: str = sys.executable
    #: Prepended to the workers' ``sys.path`` (absolute).
    pythonpath: tuple[str, ...] = ()
    #: Recycle a worker after this many tasks (None: never).
    max_tasks_per_worker: int | None = None
    #: Recycle a worker whose resident memory exceeds this after a task (None: never).
    max_worker_rss_bytes: int | None = None
    #: A worker that has not reported ready by then is killed.
    start_timeout_ms: int = 30_000
    #: A worker idle this long is stopped, unless that would leave fewer than ``min``.
    idle_timeout_ms: int = 60_000
    output_tail_bytes: int = 64 * 1024
    env_allow: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME")


@dataclass(frozen=True)
class DispatchConfig:
    #: Firings the ready queues hold in memory; the rest wait in the store (``committed``) and
    #: are read back in order as the queues run down.
    max_ready: int = 10_000


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``text``: one readable line per event; ``json``: one JSON object per line, for shippers.
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class MetricsConfig:
    #: ``(host, port)`` of the HTTP scrape endpoint; None: no listener (``schedctl metrics``
    #: still answers).
    listen: tuple[str, int] | None = None
    #: A node_exporter textfile-collector file, rewritten atomically every interval.
    textfile: Path | None = None
    textfile_interval_ms: int = 15_000
    #: Distinct schedules with series of their own; later ones share ``schedule="@other"``.
    max_schedules: int = 1000


@dataclass(frozen=True)
class HeartbeatConfig:
    #: The outside monitor's ping URL (healthchecks-style); None: no heartbeat.
    url: str | None = None
    interval_ms: int = 60_000
    method: Literal["GET", "POST"] = "GET"
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class Defaults:
    policies: model.Policies = field(default_factory=model.Policies)
    jitter_ms: int | None = None
    timezone: str = "UTC"
    #: Cap on a task's arguments (``payload.check_payload_size``), for config and API tasks.
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD


@dataclass(frozen=True)
class TenantConfig:
    name: str
    #: Retries the tenant's firings may take per window; None: unlimited.
    retry_budget: Rate | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None
    #: Hex SHA-256 of the file's bytes, shown by ``status`` so operators can tell which
    #: version of the file the daemon is running.
    sha256: str
    daemon: DaemonConfig
    store: StoreConfig
    admin: AdminConfig
    workers: WorkersConfig
    logging: LoggingConfig
    defaults: Defaults
    metrics: MetricsConfig
    heartbeat: HeartbeatConfig
    #: By name; every ``ScheduleSpec.tenant`` is a key here.
    tenants: Mapping[str, TenantConfig]
    #: By name, ``default`` always among them; every ``ScheduleSpec.lane`` is a key here.
    lanes: Mapping[str, Lane]
    schedules: tuple[model.ScheduleSpec, ...]
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    catchup: CatchupSettings = field(default_factory=CatchupSettings)

    def settled(self) -> Config:
        """This config without its schedules: what the daemon keeps once they are in the store.

        Parsed specs are most of a big deployment's memory (a 100 000-schedule file: 220 MB of
        them, against 35 MB for the rest of the daemon), and nothing reads them after reconcile:
        the store is the truth and the dispatcher reads it."""
        return replace(self, schedules=())
