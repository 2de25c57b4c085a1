"""The admin operations in-process: a real store and dispatcher, a recording runner, fake time.

Shared by the component tests of the operations (``test_dlq_ops``, ``test_admin_ops``): they call
``AdminOps.handle`` exactly as the socket server does, with a peer, so permission checks and
argument validation are part of what they test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from schedd.admin.access import Access
from schedd.admin.ops import AdminOps, DaemonView
from schedd.admin.protocol import Peer
from schedd.catchup import CatchupDrain, CatchupSettings
from schedd.clock import ClockReading
from schedd.config import load_config
from schedd.dispatcher import Dispatcher
from schedd.events import FiringEvents
from schedd.metrics import Metrics
from schedd.overdue import OverdueWatch
from schedd.reload import Reloader
from schedd.runner import Runner
from schedd.store.records import FiringRef, Ticket
from schedd.store.sqlite import SqliteStore
from schedd.telemetry import Telemetry
from schedd.timer import Timer
from schedd.workers.pool import PoolStats
from tests.fakes import FakeClock

#: root: always an operator.
PEER = Peer(pid=1, uid=0, gid=0)


@dataclass
class RecordingRunner:
    """Stands in for the runner: the ops only submit tickets to it (and status reads counts)."""

    submitted: list[Ticket] = field(default_factory=list)
    discarded: list[int] = field(default_factory=list)
    queued: int = 0
    busy: int = 0
    capacity: int = 4
    started: int = 0
    finished: int = 0

    def submit(self, tickets: Iterable[Ticket], as_of: ClockReading | None = None) -> None:
        self.submitted.extend(tickets)

    def discard(self, removed: Iterable[FiringRef]) -> None:
        self.discarded.extend(f.id for f in removed)

    def active_count(self, schedule_id: int) -> int:
        return 0

    def prescale(self, due_soon: int) -> None:
        pass

    @property
    def pool(self) -> IdlePool:
        return IdlePool()

    @property
    def ready(self) -> QuietReady:
        return QuietReady()


@dataclass
class QuietReady:
    """The runner's ready queues with nothing in them and no backlog draining."""

    max_ready: int = 100
    held: int = 0
    peak: int = 0
    draining: bool = False
    drain: CatchupDrain = field(default_factory=lambda: CatchupDrain(CatchupSettings(), 0))


class IdlePool:
    def stats(self) -> PoolStats:
        return PoolStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ())


def admin_ops(
    tmp_path: Path,
    store: SqliteStore,
    clock: FakeClock,
    runner: RecordingRunner,
    config_text: str = '[daemon]\nstate_dir = "state"\n',
) -> AdminOps:
    """``AdminOps`` over ``store`` with the config ``config_text`` (written to ``tmp_path``)."""
    config_file = tmp_path / "schedd.toml"
    config_file.write_text(config_text)
    config = load_config(config_file)
    events = FiringEvents(clock)
    timer = Timer(clock)
    dispatcher = Dispatcher(store, timer, runner, events, clock, horizon_ms=60_000)
    view = DaemonView(
        config=config,
        store=store,
        timer=timer,
        runner=cast(Runner, runner),
        dispatcher=dispatcher,
        events=events,
        clock=clock,
        started_wall_ms=clock.wall_ms(),
        started_mono_ms=clock.monotonic_ms(),
        reloader=Reloader(config, store, dispatcher, clock),
        telemetry=Telemetry(
            Metrics(),
            OverdueWatch(clock),
            store=store,
            runner=cast(Runner, runner),
            timer=timer,
            clock=clock,
        ),
    )
    return AdminOps(view, Access.from_config(config.admin, daemon_uid=0, clock=clock))
