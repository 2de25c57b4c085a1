"""Crash safety, proven by trying: SIGKILL a busy daemon again and again, then judge the result.

One seeded loop (``random.Random(seed)``; the seed is in every failure message, and
``SCHEDD_CRASH_SEED`` replays it) starts the real daemon on a config with fast interval
schedules (overlap allow, skip and queue_one; one that fails its first attempt; one slow enough
to be killed mid-run) and bursts of one-shot schedules due in the same second. Each iteration
ends the daemon one way, in an order shuffled by the seed so every way occurs in the default run:

* ``timer``: SIGKILL after a random delay (wherever it lands);
* a failpoint armed ``kill:N`` (N random): right after the write-ahead commit, between spawn and
  the running row, between a task's end and its result's commit;
* ``mid_recovery``: the start-up is killed between the store's recovery and the re-queue;
* ``worker``: a running task's process is SIGKILLed (a crash: retried or quarantined by its
  policy), then the daemon after a random delay.

After each kill, with the daemon dead, the store is read (read-only) to note what was in flight
and each schedule's high-water mark. At the end the schedules are paused, the daemon drains
(polled over the admin socket with a deadline) and stops, and :func:`tests.crashcheck.check`
judges the store and the tasks' probe log. Long mode: ``docs/crash-testing.md``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from schedd.clock import SystemClock
from schedd.failpoints import ENV as FAILPOINTS_ENV
from schedd.keys import firing_key, format_instant
from tests.crashcheck import (
    RETRYABLE,
    DaemonKill,
    FiringRow,
    Kill,
    RunRow,
    ScheduleRow,
    StoreRows,
    WorkerKill,
    check,
    parse_probe,
)
from tests.integration.conftest import Daemon, TaskSignal, base_config

LONG_ITERATIONS = os.environ.get("SCHEDD_CRASH_ITERATIONS")
FAILPOINTS = (
    "after_commit_before_dispatch",
    "after_spawn_before_running_row",
    "after_run_before_result",
)
MODES = ("timer", *FAILPOINTS, "mid_recovery", "worker")
#: A paused schedule's occurrences due this long before the pause must all have fired.
PAUSE_SLACK_MS = 2_000
DRAIN_TIMEOUT_S = 90
clock = SystemClock()


@dataclass(frozen=True)
class Shape:
    """How big a run is: the default fits CI (two cores, well under a minute)."""

    iterations: int
    bursts: int
    per_burst: int


def probe(log: Path, work: str = ":", after: str = "") -> str:
    """A task that records itself: a start line before its work, and the end line after it."""
    me = "$SCHEDD_IDEMPOTENCY_KEY $SCHEDD_ATTEMPT $$ $s"
    start, end = f'echo "{me} -" >> {log}', f'echo "{me} $(date +%s%3N)" >> {log}'
    return f"s=$(date +%s%3N); {start}; {work}; {end}{after}"


def schedule(name: str, trigger: str, command: str, extra: str = "") -> str:
    return f"""
[schedules.{name}]
{trigger}
jitter = "0s"
shell = true
command = '{command}'
{extra}"""


RETRY = 'retry = { max_attempts = 3, base = "50ms", max = "200ms" }'


def one_shots(shape: Shape, t0: int) -> list[tuple[str, int]]:
    """Bursts of one-shot schedules, each burst due within one second, a second apart."""
    return [
        (f"b{b}_{i}", t0 + 3_000 + 1_000 * b + (i * 997) % 1_000)
        for b in range(shape.bursts)
        for i in range(shape.per_burst)
    ]


def harness_config(root: Path, shape: Shape, t0: int) -> str:
    log, fifo = root / "probe.log", root / "slow.fifo"
    parts = [
        schedule("fast_allow", 'every = "50ms"', probe(log), 'overlap = "allow"'),
        schedule("fast_skip", 'every = "50ms"', probe(log)),
        schedule("queue", 'every = "100ms"', probe(log, "sleep 0.05"), 'overlap = "queue_one"'),
        schedule(
            "flaky", 'every = "200ms"', probe(log, after='; [ "$SCHEDD_ATTEMPT" != 1 ]'), RETRY
        ),
        schedule("slow", 'every = "500ms"', probe(log, f"echo >> {fifo}; sleep 0.5"), RETRY),
    ]
    for name, at in one_shots(shape, t0):
        parts.append(schedule(name, f'at = "{format_instant(at)}"', probe(log)))
    return base_config("".join(parts))


INTERVALS = ("fast_allow", "fast_skip", "queue", "flaky", "slow")


@dataclass
class Harness:
    daemon: Daemon
    rng: random.Random
    monkeypatch: pytest.MonkeyPatch
    slow_started: TaskSignal
    kills: list[Kill] = field(default_factory=list)
    tally: Counter[str] = field(default_factory=Counter)

    @property
    def db(self) -> Path:
        return self.daemon.root / "state" / "schedd.db"

    @property
    def probe_log(self) -> Path:
        return self.daemon.root / "probe.log"

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.daemon.proc is not None
        return self.daemon.proc

    def start(self, failpoint: str | None, *, wait_ready: bool) -> None:
        if failpoint is None:
            self.monkeypatch.delenv(FAILPOINTS_ENV, raising=False)
        else:
            self.monkeypatch.setenv(FAILPOINTS_ENV, failpoint)
        self.daemon.start(wait_ready=wait_ready)

    def iteration(self, mode: str) -> None:
        if mode == "mid_recovery":
            self.start("mid_recovery=kill", wait_ready=False)
            assert self.proc.wait(timeout=60) == -signal.SIGKILL, self.daemon.logs()
            self.dead(mode)
        elif mode in FAILPOINTS:
            self.start(f"{mode}=kill:{self.rng.randint(1, 40)}", wait_ready=False)
            try:
                assert self.proc.wait(timeout=self.rng.uniform(2, 4)) == -signal.SIGKILL
                self.dead(mode)
            except subprocess.TimeoutExpired:  # not reached N times: a random moment instead
                self.kill("timer")
        else:
            self.start(None, wait_ready=True)
            if mode == "worker":
                self.kill_a_task()
            self.alive_for(self.rng.uniform(0.05, 2.0))
            self.kill(mode)

    def alive_for(self, seconds: float) -> None:
        """Let the daemon run (a random kill moment, a poll interval); it must not die."""
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return
        pytest.fail(f"the daemon died on its own:\n{self.daemon.logs()[-5000:]}")

    def kill(self, mode: str) -> None:
        at = clock.wall_ms()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.dead(mode, at)

    def dead(self, mode: str, at_ms: int | None = None) -> None:
        """The daemon is gone: note what the store says was in flight and how far it fired."""
        at = clock.wall_ms() if at_ms is None else at_ms
        with read_only(self.db) as conn:
            marks = dict(conn.execute("SELECT name, fired_through_ms FROM schedules"))
            states = dict(conn.execute("SELECT key, state FROM firings"))
        self.kills.append(DaemonKill(at, marks, states))
        self.tally[mode] += 1

    def kill_a_task(self) -> None:
        """SIGKILL a ``slow`` task that has written its start line and not yet its end."""
        killed = {(k.key, k.attempt) for k in self.kills if isinstance(k, WorkerKill)}
        for _ in range(20):
            self.slow_started.wait(within_s=30)
            now = clock.wall_ms()
            runs, _ = parse_probe(self.probe_log.read_text().splitlines())
            victims = [
                r
                for r in runs
                if r.key.startswith("slow@")
                and r.end_ms is None
                and now - r.start_ms < 200
                and (r.key, r.attempt) not in killed
            ]
            for victim in victims[-1:]:
                try:
                    pidfd = os.pidfd_open(victim.pid)
                except ProcessLookupError:
                    continue
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
                self.kills.append(WorkerKill(victim.key, victim.attempt))
                self.tally["worker_task"] += 1
                return
        pytest.fail("no slow task could be caught mid-run")

    def drain(self, last_one_shot: str | None) -> int:
        """Final start: let the one-shots fire, pause the intervals, drain; the instant by which
        every occurrence must have fired."""
        self.start(None, wait_ready=True)
        if last_one_shot is not None:
            got = self.daemon.call("wait", key=last_one_shot, timeout_ms=DRAIN_TIMEOUT_S * 1000)
            assert got["done"], self.daemon.logs()[-5000:]
        due_by = clock.wall_ms() - PAUSE_SLACK_MS
        for name in INTERVALS:
            self.daemon.call("schedules.pause", name=name)
        self.drain_started()
        return due_by

    def drain_started(self) -> None:
        """Wait (polling the admin socket, with a deadline) until no firing is left, then stop."""
        deadline = clock.monotonic_ms() + DRAIN_TIMEOUT_S * 1000
        while clock.monotonic_ms() < deadline:
            unfinished = self.daemon.call("status")["firings"]["unfinished"]
            if unfinished == 0 and self.daemon.call("backlog")["total"]["count"] == 0:
                assert self.daemon.stop(signal.SIGTERM) == 0
                return
            self.alive_for(0.1)
        pytest.fail(f"not drained in {DRAIN_TIMEOUT_S}s:\n{self.daemon.logs()[-5000:]}")


class read_only:
    """A read-only connection to the store, closed before the daemon starts again."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def store_rows(db: Path) -> StoreRows:
    with read_only(db) as conn:
        schedules = []
        for name, rule, created, fired in conn.execute(
            "SELECT name, rule, created_ms, fired_through_ms FROM schedules"
        ):
            trigger = json.loads(rule)["trigger"]
            schedules.append(
                ScheduleRow(
                    name,
                    trigger.get("every_ms"),
                    trigger.get("anchor_ms", 0),
                    trigger.get("at_ms"),
                    created,
                    fired,
                )
            )
        firings = [
            FiringRow(*r)
            for r in conn.execute(
                "SELECT key, schedule, scheduled_for_ms, state, attempt FROM firings"
            )
        ]
        runs = [
            RunRow(*r)
            for r in conn.execute(
                "SELECT f.key, r.attempt, r.state, r.pid, r.started_ms"
                " FROM runs r JOIN firings f ON f.id = r.firing_id"
            )
        ]
    return StoreRows(schedules, firings, runs)


def run_harness(
    shape: Shape, daemon_factory: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("SCHEDD_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    t0 = clock.wall_ms()
    slow_started = TaskSignal(workdir / "slow.fifo")
    d: Daemon = daemon_factory(harness_config(workdir, shape, t0))
    h = Harness(d, rng, monkeypatch, slow_started)
    order = list(MODES)
    rng.shuffle(order)
    try:
        for i in range(shape.iterations):
            h.iteration(order[i % len(order)] if i < len(order) else rng.choice(MODES))
        last = max(one_shots(shape, t0), key=lambda s: s[1], default=None)
        due_by = h.drain(None if last is None else firing_key(*last))
    finally:
        slow_started.close()
    store = store_rows(h.db)
    probe_lines = h.probe_log.read_text().splitlines()
    problems = check(store, probe_lines, h.kills, due_by_ms=due_by)
    report = summary(seed, shape, store, probe_lines, h)
    print(report)
    assert not problems, f"{report}\n" + "\n".join(problems[:50])


def summary(seed: int, shape: Shape, store: StoreRows, probe_lines: list[str], h: Harness) -> str:
    """The figures a reader needs to trust a green run: what was checked, killed and repeated."""
    runs, _ = parse_probe(probe_lines)
    by_key = Counter(r.key for r in runs)
    states = {(r.key, r.attempt): r.state for r in store.runs}
    last = {k: max(r.attempt for r in runs if r.key == k) for k, n in by_key.items() if n > 1}
    duplicated = {
        r.key
        for r in runs
        if r.key in last
        and r.attempt < last[r.key]
        and states.get((r.key, r.attempt)) not in RETRYABLE
    }
    in_flight = [
        k for k in duplicated if any(isinstance(x, DaemonKill) and x.in_flight(k) for x in h.kills)
    ]
    final = Counter(f.state for f in store.firings)
    return (
        f"crash harness seed={seed} iterations={shape.iterations} kills={dict(h.tally)}"
        f" firings={len(store.firings)} {dict(final)} runs={len(store.runs)}"
        f" task_runs={len(runs)} duplicates={len(duplicated)}"
        f" (in flight at a kill: {len(in_flight)})"
    )


def test_crash_harness(daemon_factory: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_harness(Shape(iterations=10, bursts=4, per_burst=150), daemon_factory, workdir, monkeypatch)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
@pytest.mark.skipif(
    LONG_ITERATIONS is None, reason="set SCHEDD_CRASH_ITERATIONS (docs/crash-testing.md)"
)
def test_crash_harness_long(
    daemon_factory: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    iterations = int(LONG_ITERATIONS or 0)
    shape = Shape(iterations=iterations, bursts=max(4, iterations // 4), per_burst=150)
    run_harness(shape, daemon_factory, workdir, monkeypatch)


def test_a_kill_between_spawn_and_running_row_leaves_no_second_run_alongside(
    daemon_factory: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failpoint lands exactly where random kills rarely do: the task process exists but
    the store has no pid for it yet; recovery must still kill it (the spawn journal) before
    re-running its key."""
    log = workdir / "probe.log"
    d: Daemon = daemon_factory(
        base_config(schedule("slow", 'every = "2s"', probe(log, "sleep 1.5")))
    )
    unused = TaskSignal(workdir / "slow.fifo")  # the harness kills no task here
    h = Harness(d, random.Random(0), monkeypatch, unused)
    try:
        h.start("after_spawn_before_running_row=kill:1", wait_ready=False)
        assert h.proc.wait(timeout=60) == -signal.SIGKILL, d.logs()
        h.dead("after_spawn_before_running_row")
        h.start(None, wait_ready=True)
        assert d.call("wait", schedule="slow", count=2, timeout_ms=30_000)["done"], d.logs()
        due_by = clock.wall_ms() - PAUSE_SLACK_MS
        d.call("schedules.pause", name="slow")
        h.drain_started()
        problems = check(store_rows(h.db), log.read_text().splitlines(), h.kills, due_by_ms=due_by)
        assert problems == []
    finally:
        unused.close()
