"""The composition root: start-up, serving, and shutdown, written once and in order.

Start-up order carries the guarantees:

1. lock the store (a second daemon fails here, naming the holder's pid);
2. open and migrate the store;
3. **recover**: close runs left ``running`` by a crash as ``lost``, kill their surviving process
   groups (identity-checked, so a reused pid is never hit), and move every unfinished firing back
   to ``committed`` with attempt + 1 — before anything can start a second run of the same key;
4. reconcile the config's schedules into the store;
5. hand the runner the recovered firings (as ranges it reads back), open the admin socket,
   start the runner and the dispatching;
6. only then report ``READY=1`` to systemd.

Shutdown (SIGTERM/SIGINT): stop producing firings first, then give running tasks
``[daemon] shutdown_grace`` to finish, kill what remains, close the socket and the store, exit 0.
Signal handlers only set an event; the main coroutine acts on it.

SIGHUP reloads the config (:mod:`schedd.reload`), exactly as ``schedctl reload`` does, bracketed
by ``RELOADING=1``/``READY=1``. Its handler is installed first thing, so a SIGHUP that arrives
while the daemon is still starting is acted on once it is ready instead of killing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from functools import partial
from pathlib import Path

from schedd import __version__, failpoints, heap
from schedd.admin.access import Access
from schedd.admin.ops import AdminOps, DaemonView
from schedd.admin.server import AdminServer
from schedd.attempt import Attempts
from schedd.clock import Clock
from schedd.config import Config
from schedd.dispatcher import Dispatcher
from schedd.errors import ScheddError
from schedd.events import FiringEvents
from schedd.health import Health, stall_ms_for
from schedd.heartbeat import Heartbeat
from schedd.hooks import Hooks
from schedd.metrics import Metrics
from schedd.metrics_http import MetricsServer, serve_metrics, write_textfile_forever
from schedd.model import ScheduleSpec
from schedd.overdue import OverdueWatch
from schedd.planner import initial_marks
from schedd.ratelimit import Budgets
from schedd.reload import Reloader, describe
from schedd.runner import Runner
from schedd.sdnotify import Notifier
from schedd.spawnlog import SpawnJournal
from schedd.statelock import StateLock
from schedd.store.contract import Store
from schedd.store.sqlite import SqliteStore
from schedd.telemetry import Telemetry
from schedd.timer import Timer
from schedd.watchdog import supervise
from schedd.workers.environment import build_env
from schedd.workers.limits import LimitedLauncher
from schedd.workers.pool import PoolSettings, WorkerPool
from schedd.workers.procs import ProcessIdentity, kill_group_if_ours

log = logging.getLogger("schedd")

#: How long running on_quarantine hooks may still take at shutdown.
HOOK_GRACE_MS = 10_000


async def serve(config: Config, clock: Clock, *, notifier: Notifier | None = None) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    notifier = notifier or Notifier()
    failpoints.arm_from_env()
    stop, hup = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Installed before anything else: SIGHUP's default action would kill a daemon still starting.
    loop.add_signal_handler(signal.SIGHUP, hup.set)

    # Consumed by the reconcile: from then on the store holds the schedules, not this process.
    schedules = list(config.schedules)
    config = config.settled()
    lock = StateLock(config.store.path.with_name(config.store.path.name + ".lock"))
    lock.acquire()
    store = SqliteStore(
        config.store.path,
        synchronous=config.store.synchronous,
        busy_timeout_ms=config.store.busy_timeout_ms,
    )
    try:
        await store.open()
        await _run(config, schedules, clock, store, notifier, stop, hup)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await store.close()
        lock.release()


async def _run(
    config: Config,
    schedules: list[ScheduleSpec],
    clock: Clock,
    store: SqliteStore,
    notifier: Notifier,
    stop: asyncio.Event,
    hup: asyncio.Event,
) -> None:
    started_wall, started_mono = clock.wall_ms(), clock.monotonic_ms()
    journal = SpawnJournal(config.store.path.with_name(config.store.path.name + ".spawns"))
    await _recover(store, journal, started_wall)

    await _reconcile(store, config, schedules, started_wall)

    events = FiringEvents(clock)
    launcher = LimitedLauncher(inherit_defaults=True)
    pool = _pool(config, clock)
    hooks = Hooks(clock, launcher, inherited_env=os.environ, env_allow=config.workers.env_allow)
    timer = Timer(clock)
    attempts = _attempts(config, clock, store, events, pool, launcher, hooks, journal)
    runner = Runner(
        store,
        clock,
        events,
        attempts,
        pool,
        max_workers=config.workers.max,
        lanes=config.lanes,
        max_ready=config.dispatch.max_ready,
        catchup=config.catchup,
    )
    dispatcher = Dispatcher(
        store,
        timer,
        runner,
        events,
        clock,
        horizon_ms=config.store.horizon_ms,
        urgent_lanes=frozenset(name for name, lane in config.lanes.items() if lane.reserved),
    )
    attempts.on_retry = dispatcher.retry_scheduled
    resumed = await _resume(store, runner)
    reloader = Reloader(config, store, dispatcher, clock)
    telemetry = _telemetry(clock, store, hooks, timer, attempts, runner, dispatcher, reloader)
    view = DaemonView(
        config,
        store,
        timer,
        runner,
        dispatcher,
        events,
        clock,
        started_wall,
        started_mono,
        reloader,
        telemetry,
        node_identity(),
    )
    server = _admin_server(view)
    await server.start()
    metrics_server = await _metrics_server(config, telemetry, clock)
    await pool.start()
    runner.start()
    dispatch_task = asyncio.create_task(dispatcher.run(), name="schedd-dispatch")
    health = Health(timer, dispatcher, clock, stall_ms=stall_ms_for(notifier.watchdog_ms))
    services = [
        dispatch_task,
        *_services(config, clock, notifier, health, telemetry, reloader, hup),
    ]
    heap.settle()
    notifier.notify("READY=1", f"STATUS=serving {config.path} ({resumed} firing(s) resumed)")
    log.info(
        "schedd %s ready: pid %d, store %s, socket %s",
        __version__,
        os.getpid(),
        config.store.path,
        config.admin.socket,
    )
    try:
        stop_wait = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stop_wait, dispatch_task}, return_when=asyncio.FIRST_COMPLETED)
        if dispatch_task.done() and not stop_wait.done():
            stop_wait.cancel()
            dispatch_task.result()  # the loop died: surface its exception
    finally:
        notifier.notify("STOPPING=1")
        log.info("stopping: no new firings; letting running tasks finish")
        for task in reversed(services):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.stop(config.daemon.shutdown_grace_ms)
        await hooks.close(HOOK_GRACE_MS)
        await pool.close()
        if metrics_server is not None:
            metrics_server.close()
            await metrics_server.wait_closed()
        await server.close()
        journal.close()
        log.info("stopped")


async def _reconcile(
    store: Store, config: Config, schedules: list[ScheduleSpec], now_ms: int
) -> None:
    """Store the config's schedules, then let go of them: the store is their truth now."""
    summary = await store.reconcile(
        schedules, initial=partial(initial_marks, now_ms=now_ms), now_ms=now_ms
    )
    schedules.clear()
    log.info("config %s: %s", config.path, describe(summary))


def _attempts(
    config: Config,
    clock: Clock,
    store: Store,
    events: FiringEvents,
    pool: WorkerPool,
    launcher: LimitedLauncher,
    hooks: Hooks,
    journal: SpawnJournal,
) -> Attempts:
    workers = config.workers
    budgets = Budgets(
        {n: t.retry_budget for n, t in config.tenants.items() if t.retry_budget is not None},
        clock.monotonic_ms(),
    )
    attempts = Attempts(
        store,
        clock,
        events,
        pool=pool,
        launcher=launcher,
        hooks=hooks,
        budgets=budgets,
        inherited_env=os.environ,
        env_allow=workers.env_allow,
        output_tail_bytes=workers.output_tail_bytes,
    )
    attempts.journal = journal
    return attempts


def _telemetry(
    clock: Clock,
    store: Store,
    hooks: Hooks,
    timer: Timer,
    attempts: Attempts,
    runner: Runner,
    dispatcher: Dispatcher,
    reloader: Reloader,
) -> Telemetry:
    """Metrics and overdue detection, hooked to where runs end, batches commit and schedules
    change."""
    telemetry = Telemetry(
        Metrics(max_schedules=reloader.config.metrics.max_schedules),  # the start-up config
        OverdueWatch(clock, run_hook=hooks.overdue),
        store=store,
        runner=runner,
        timer=timer,
        clock=clock,
    )
    attempts.observer = telemetry
    dispatcher.on_committed = telemetry.committed
    reloader.watch, reloader.unwatch = telemetry.watch, telemetry.unwatch
    return telemetry


def _services(
    config: Config,
    clock: Clock,
    notifier: Notifier,
    health: Health,
    telemetry: Telemetry,
    reloader: Reloader,
    hup: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """The background loops beside dispatch: reload on SIGHUP, the watchdog and ``STATUS=``,
    overdue detection, the heartbeat and the metrics textfile (the last two when configured)."""
    runner, store = telemetry.runner, telemetry.store
    loops: dict[str, Coroutine[None, None, None]] = {
        "sighup": _reload_on_hup(hup, reloader, notifier),
        "watchdog": supervise(notifier, health, clock, partial(_status_line, store, runner, clock)),
        "overdue": telemetry.watch_overdue(),
    }
    if config.heartbeat.url is not None:
        loops["heartbeat"] = Heartbeat(
            config.heartbeat,
            clock,
            health.problem,
            summary=lambda: f"schedd {__version__}: {runner.queued} ready, {runner.busy} running",
            on_result=telemetry.metrics.heartbeat_sent,
        ).run()
    if config.metrics.textfile is not None:
        loops["textfile"] = write_textfile_forever(
            config.metrics.textfile, config.metrics.textfile_interval_ms, telemetry.render, clock
        )
    return [asyncio.create_task(loop, name=f"schedd-{name}") for name, loop in loops.items()]


async def _metrics_server(
    config: Config, telemetry: Telemetry, clock: Clock
) -> MetricsServer | None:
    if config.metrics.listen is None:
        return None
    host, port = config.metrics.listen
    server = await serve_metrics(
        host, port, telemetry.render, telemetry.metrics.content_type, clock=clock
    )
    log.info("metrics at http://%s:%d/metrics", host, port)
    return server


async def _recover(store: SqliteStore, journal: SpawnJournal, now_ms: int) -> None:
    """Close the runs a crash left open and kill what is left of their processes: those the
    store recorded, and those spawned too late for the store to know (the spawn journal)."""
    lost = await store.recover(now_ms)
    await failpoints.hit("mid_recovery")
    for run in lost:
        if run.process is None:
            continue
        ident = ProcessIdentity(run.process.pid, run.process.pgid, run.process.start_ticks)
        if kill_group_if_ours(ident):
            log.warning(
                "killed the leftover process group %d of %s before re-running it",
                run.process.pgid,
                run.key,
            )
    for ident in journal.leftovers():
        if kill_group_if_ours(ident):
            log.warning(
                "killed the leftover process group %d, spawned just before the last stop",
                ident.pgid,
            )
    journal.start()
    if lost:
        log.warning("recovered %d run(s) in flight at the last stop; re-running them", len(lost))


def _pool(config: Config, clock: Clock) -> WorkerPool:
    workers = config.workers
    return WorkerPool(
        PoolSettings(
            python=workers.python,
            pythonpath=workers.pythonpath,
            env=build_env(inherited=os.environ, allow=workers.env_allow, task_env={}, firing={}),
            cwd=str(config.daemon.state_dir),
            min_workers=workers.min,
            max_workers=workers.max,
            max_tasks_per_worker=workers.max_tasks_per_worker,
            max_worker_rss_bytes=workers.max_worker_rss_bytes,
            start_timeout_ms=workers.start_timeout_ms,
            idle_timeout_ms=workers.idle_timeout_ms,
            output_tail_bytes=workers.output_tail_bytes,
        ),
        clock,
    )


def _admin_server(view: DaemonView) -> AdminServer:
    """The socket, its operations, and who may use them; a reload re-reads who may."""
    config, clock, uid = view.config, view.clock, os.getuid()
    ops = AdminOps(view, Access.from_config(config.admin, daemon_uid=uid, clock=clock))

    def config_changed(new: Config) -> None:
        view.config = new
        ops.access = Access.from_config(new.admin, daemon_uid=uid, clock=clock)

    view.reloader.on_config = config_changed
    admin = config.admin
    return AdminServer(
        admin.socket,
        ops.handle,
        mode=admin.mode,
        group=admin.group,
        max_request_bytes=admin.max_request_bytes,
        idle_timeout_ms=admin.idle_timeout_ms,
        max_connections=admin.max_connections,
        clock=clock,
    )


async def _reload_on_hup(hup: asyncio.Event, reloader: Reloader, notifier: Notifier) -> None:
    """SIGHUP reloads like ``schedctl reload``; a bad file is logged and changes nothing."""
    while True:
        await hup.wait()
        hup.clear()
        notifier.notify("RELOADING=1")
        try:
            await reloader.reload()
        except ScheddError as exc:
            log.error("reload on SIGHUP failed; still running the previous config:\n%s", exc)
        finally:
            notifier.notify("READY=1")


async def _status_line(store: Store, runner: Runner, clock: Clock) -> str:
    """One line for ``systemctl status``: how much is scheduled, queued and how late."""
    now = clock.wall_ms()
    lags = [ms for d in await store.lanes() if (ms := d.lag_ms(now)) is not None]
    lag = f", lag {max(lags)} ms" if lags else ""
    return (
        f"{await store.count_schedules()} schedule(s), {runner.queued} ready,"
        f" {runner.busy} running{lag}"
    )


def node_identity() -> dict[str, str | None]:
    """Which host answered: a status line copied into a ticket must say where it came from."""
    try:
        machine_id: str | None = Path("/etc/machine-id").read_text().strip() or None
    except OSError:
        machine_id = None
    return {"hostname": socket.gethostname(), "machine_id": machine_id}


async def _resume(store: SqliteStore, runner: Runner) -> int:
    """Hand the runner every committed firing (recovered or never started): as id ranges it
    reads back in order, and counts per schedule, so a large backlog costs no memory here."""
    spans = await store.ready_spans()
    runner.resume(spans, await store.committed_by_schedule())
    return sum(s.count for s in spans)
