"""The Python worker pool against real worker processes (this interpreter, tasks in tests.pytasks).

Nothing sleeps to synchronise: runs are awaited to their results, the pool's background work
is awaited through what it returns (``prescale``) or through pidfds on the processes it must
end, and the idle shrink runs on a fake clock. "The group is dead" is proven as in
``test_command_runner.py``: every member's pidfd reports its exit.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from schedd.clock import Clock, SystemClock
from schedd.errors import InvalidArgument, Unavailable
from schedd.model import Limits, RunOutcome
from schedd.workers.launch import PYWORKER
from schedd.workers.messages import PythonCall
from schedd.workers.outcome import RunResult
from schedd.workers.pool import PoolSettings, WorkerPool
from schedd.workers.procs import ProcessIdentity, process_identity
from schedd.workers.pyworker import MAX_FRAME, FrameReader, ProtocolError, encode
from tests.fakes import FakeClock
from tests.procs import assert_group_dies, wait_dead

REPO = str(Path(__file__).resolve().parents[2])
CONTEXT = {
    "idempotency_key": "nightly@2026-01-01T00:00:00.000Z",
    "scheduled_for": "2026-01-01T00:00:00.000Z",
    "attempt": 2,
    "schedule": "nightly",
}
MiB = 1024 * 1024


def settings(**overrides: Any) -> PoolSettings:
    fields: dict[str, Any] = {
        "python": sys.executable,
        "pythonpath": (REPO,),
        "env": {"PATH": "/usr/bin:/bin", "APP_SETTING": "from the pool"},
        "cwd": None,
        "min_workers": 1,
        "max_workers": 2,
        "max_tasks_per_worker": None,
        "max_worker_rss_bytes": None,
        "start_timeout_ms": 10_000,
        "idle_timeout_ms": 60_000,
        "output_tail_bytes": 64 * 1024,
    }
    fields.update(overrides)
    return PoolSettings(**fields)


def call(target: str, /, *args: Any, **overrides: Any) -> PythonCall:
    fields: dict[str, Any] = {
        "target": f"tests.pytasks:{target}",
        "args": args,
        "kwargs": {},
        "context": CONTEXT,
        "env": {},
        "timeout_ms": 30_000,
        "kill_grace_ms": 5_000,
    }
    fields.update(overrides)
    return PythonCall(**fields)


class Spawns:
    """An ``on_spawn`` that remembers the identities it was given."""

    def __init__(self) -> None:
        self.identities: list[ProcessIdentity] = []
        self.called = asyncio.Event()

    async def __call__(self, identity: ProcessIdentity) -> None:
        self.identities.append(identity)
        self.called.set()


async def run(
    pool: WorkerPool,
    c: PythonCall,
    spawns: Callable[[ProcessIdentity], Awaitable[object]] | None = None,
    stop: asyncio.Future[str] | None = None,
) -> RunResult:
    async with asyncio.timeout(20):  # a hang fails here, not at pytest's global timeout
        return await pool.run(c, on_spawn=spawns or Spawns(), stop=stop)


async def pid_of_next_run(pool: WorkerPool) -> int:
    result = await run(pool, call("pid"))
    assert result.outcome is RunOutcome.SUCCEEDED, result
    return int(result.output)


MakePool = Callable[..., Awaitable[WorkerPool]]


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    pools: list[WorkerPool] = []

    async def make(clock: Clock | None = None, **overrides: Any) -> WorkerPool:
        pool = WorkerPool(settings(**overrides), clock or SystemClock())
        pools.append(pool)
        await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
async def pool(make_pool: MakePool) -> WorkerPool:
    return await make_pool()


# --- running tasks ----------------------------------------------------------------------------


async def test_sync_function_gets_its_json_arguments(pool: WorkerPool) -> None:
    result = await run(pool, call("echo", 1, "two", [3], kwargs={"four": {"five": None}}))
    assert result == RunResult(
        RunOutcome.SUCCEEDED,
        None,
        None,
        None,
        b'{"args": [1, "two", [3]], "kwargs": {"four": {"five": null}}}\n',
        False,
    )


@pytest.mark.parametrize("target", ["async_echo", "returns_coroutine"])
async def test_coroutines_are_run_to_completion(pool: WorkerPool, target: str) -> None:
    result = await run(pool, call(target, "hello"))
    assert (result.outcome, result.output) == (RunOutcome.SUCCEEDED, b"async hello\n")


async def test_context_is_given_to_functions_that_ask_for_it(pool: WorkerPool) -> None:
    result = await run(pool, call("show_context"))
    assert json.loads(result.output) == {
        "key": "nightly@2026-01-01T00:00:00.000Z",
        "scheduled_for": "2026-01-01T00:00:00+00:00",
        "utc": True,
        "attempt": 2,
        "schedule": "nightly",
    }


async def test_one_worker_runs_task_after_task(pool: WorkerPool) -> None:
    pids = {await pid_of_next_run(pool) for _ in range(3)}
    assert len(pids) == 1
    assert pool.stats().spawned == 1


async def test_runs_beyond_max_wait_for_a_free_worker(make_pool: MakePool) -> None:
    pool = await make_pool(min_workers=0, max_workers=1)
    results = await asyncio.gather(*(run(pool, call("pid")) for _ in range(3)))
    assert [r.outcome for r in results] == [RunOutcome.SUCCEEDED] * 3
    assert len({r.output for r in results}) == 1
    assert pool.stats().spawned == 1


async def test_exception_fails_the_run_with_the_traceback_in_the_output(pool: WorkerPool) -> None:
    result = await run(pool, call("boom", "bad input"))
    assert (result.outcome, result.exit_code, result.signal) == (RunOutcome.FAILED, None, None)
    assert result.reason == "exception: ValueError: bad input"
    text = result.output.decode()
    assert text.startswith("before the failure\nTraceback (most recent call last):\n")
    assert 'pytasks.py", line' in text
    assert "pyworker.py" not in text  # the worker's own frames are left out
    assert text.endswith("ValueError: bad input\n")
    assert await pid_of_next_run(pool) == pool.stats().pids[0]  # the worker carries on


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("tests.no_such_module:f", "ModuleNotFoundError: No module named 'tests.no_such_module'"),
        ("tests.pytasks:no_such_function", "AttributeError: module 'tests.pytasks' has no"),
        ("tests.pytasks:echo.nope", "AttributeError: 'function' object has no attribute 'nope'"),
        ("tests.pytasks", "ImportError: target 'tests.pytasks' is not of the form"),
        ("tests.pytasks:_hoard", "TypeError: 'tests.pytasks:_hoard' is not callable"),
    ],
)
async def test_a_target_that_cannot_be_loaded_fails_as_an_import_error(
    pool: WorkerPool, target: str, error: str
) -> None:
    result = await run(pool, call("echo", target=target))
    assert result.outcome is RunOutcome.FAILED
    assert result.reason is not None
    assert result.reason.startswith(f"import: {error}")


@pytest.mark.parametrize(
    ("code", "outcome", "reason"),
    [
        (None, RunOutcome.SUCCEEDED, None),
        (0, RunOutcome.SUCCEEDED, None),
        (3, RunOutcome.FAILED, "exception: SystemExit: 3"),
    ],
)
async def test_sys_exit_is_an_answer_not_a_worker_exit(
    pool: WorkerPool, code: int | None, outcome: RunOutcome, reason: str | None
) -> None:
    before = pool.stats().pids
    result = await run(pool, call("exit_with", code))
    assert (result.outcome, result.reason) == (outcome, reason)
    assert pool.stats().pids == before


async def test_arguments_that_are_not_json_fail_without_a_worker(pool: WorkerPool) -> None:
    spawns = Spawns()
    result = await run(pool, call("echo", {1, 2}), spawns)
    assert result.outcome is RunOutcome.FAILED
    assert result.reason is not None
    assert result.reason.startswith("arguments cannot be sent: ")
    assert spawns.identities == []


# --- crashes and misbehaviour -----------------------------------------------------------------


async def test_segfault_is_a_crash_and_the_worker_is_replaced(pool: WorkerPool) -> None:
    spawns = Spawns()
    result = await run(pool, call("segfault"), spawns)
    assert (result.outcome, result.exit_code, result.signal, result.reason) == (
        RunOutcome.CRASH,
        None,
        signal.SIGSEGV,
        "killed by SIGSEGV",
    )
    assert result.output == b"about to crash\n"
    (crashed,) = spawns.identities
    assert process_identity(crashed.pid) is None  # reaped
    assert await pid_of_next_run(pool) != crashed.pid
    stats = pool.stats()
    assert (stats.size, stats.replaced, stats.spawned) == (1, 1, 2)


async def test_a_worker_exiting_during_the_task_is_a_crash(pool: WorkerPool) -> None:
    result = await run(pool, call("hard_exit", 3))
    assert (result.outcome, result.exit_code, result.signal, result.reason) == (
        RunOutcome.CRASH,
        3,
        None,
        "worker exited with status 3 during the task",
    )
    assert (await run(pool, call("echo"))).outcome is RunOutcome.SUCCEEDED


async def test_garbage_on_the_control_channel_kills_and_replaces_the_worker(
    pool: WorkerPool,
) -> None:
    spawns = Spawns()
    result = await run(pool, call("write_to_control_channel"), spawns)
    assert (result.outcome, result.signal) == (RunOutcome.CRASH, signal.SIGKILL)
    assert result.reason == (
        f"worker broke the protocol: frame length {int.from_bytes(b'garb')} is outside "
        f"1..{MAX_FRAME}"
    )
    (broken,) = spawns.identities
    await assert_group_dies(broken.pgid)
    assert await pid_of_next_run(pool) != broken.pid
    assert (pool.stats().protocol_errors, pool.stats().replaced) == (1, 1)


async def test_an_idle_worker_that_dies_is_replaced(pool: WorkerPool) -> None:
    (idle,) = pool.stats().pids
    os.kill(idle, signal.SIGKILL)
    await wait_dead([idle])
    assert await pid_of_next_run(pool) != idle
    assert pool.stats().replaced == 1


async def test_stderr_flood_keeps_the_true_tail_and_the_channel_intact(pool: WorkerPool) -> None:
    total = 20 * MiB
    result = await run(pool, call("flood", total))
    assert (result.outcome, result.output_truncated) == (RunOutcome.SUCCEEDED, True)
    chunk = b"".join(b"%09d\n" % i for i in range(10_000))
    expected_end = (chunk * (total // len(chunk) + 1))[:total][-64 * 1024 :]
    assert result.output == expected_end
    assert (await run(pool, call("echo", "after"))).output == b'{"args": ["after"], "kwargs": {}}\n'
    assert pool.stats().replaced == 0


async def test_output_of_a_run_is_not_attributed_to_the_next(pool: WorkerPool) -> None:
    first = await run(pool, call("write_many", "a", 1_000_000))
    second = await run(pool, call("write_many", "b", 3))
    assert (first.output, first.output_truncated) == (b"a" * 64 * 1024, True)
    assert (second.output, second.output_truncated) == (b"bbb", False)


# --- timeouts, stops, cancellation ------------------------------------------------------------


async def test_timeout_kills_the_worker_group_including_grandchildren(pool: WorkerPool) -> None:
    spawns = Spawns()
    # A long grace: the run still ends at once because the whole group dies on SIGTERM.
    result = await run(
        pool, call("spawn_and_sleep", timeout_ms=1_000, kill_grace_ms=60_000), spawns
    )
    assert (result.outcome, result.signal, result.reason) == (
        RunOutcome.TIMEOUT,
        signal.SIGTERM,
        "timeout after 1s",
    )
    shell, background = (int(p) for p in result.output.split())
    await wait_dead([shell, background])
    (worker,) = spawns.identities
    await assert_group_dies(worker.pgid)
    assert await pid_of_next_run(pool) != worker.pid
    assert pool.stats().replaced == 1


async def test_endless_flood_is_killed_at_the_timeout_and_replaced(pool: WorkerPool) -> None:
    spawns = Spawns()
    result = await run(pool, call("flood_forever", timeout_ms=500), spawns)
    assert (result.outcome, result.reason) == (RunOutcome.TIMEOUT, "timeout after 500ms")
    assert (result.output, result.output_truncated) == (b"x" * 64 * 1024, True)
    assert await pid_of_next_run(pool) != spawns.identities[0].pid


async def test_stop_cancels_the_run_with_its_reason(pool: WorkerPool) -> None:
    spawns = Spawns()
    stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    running = asyncio.create_task(run(pool, call("spawn_and_sleep"), spawns, stop))
    await spawns.called.wait()
    stop.set_result("replaced by a newer occurrence")
    result = await running
    assert (result.outcome, result.reason) == (
        RunOutcome.CANCELLED,
        "replaced by a newer occurrence",
    )
    await assert_group_dies(spawns.identities[0].pgid)


async def test_cancelled_run_kills_its_worker(pool: WorkerPool) -> None:
    spawns = Spawns()
    running = asyncio.create_task(run(pool, call("spawn_and_sleep"), spawns))
    await spawns.called.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (worker,) = spawns.identities
    assert process_identity(worker.pid) is None
    await assert_group_dies(worker.pgid)
    assert (await run(pool, call("echo"))).outcome is RunOutcome.SUCCEEDED


async def test_on_spawn_raising_propagates_and_keeps_the_worker(pool: WorkerPool) -> None:
    def journal_full(identity: ProcessIdentity) -> Awaitable[None]:
        raise OSError("no space left on device")

    (worker,) = pool.stats().pids
    with pytest.raises(OSError, match="no space left"):
        await pool.run(call("hard_exit", 1), on_spawn=journal_full)
    assert await pid_of_next_run(pool) == worker  # the task was never sent


async def test_the_task_is_sent_without_waiting_for_its_start_to_be_stored(
    pool: WorkerPool,
) -> None:
    stored = asyncio.Event()

    async def slow_store(identity: ProcessIdentity) -> None:
        await stored.wait()

    try:
        result = await run(pool, call("echo", "ran"), slow_store)
    finally:
        stored.set()
    assert result.outcome is RunOutcome.SUCCEEDED, result
    assert json.loads(result.output) == {"args": ["ran"], "kwargs": {}}


async def test_a_start_that_fails_while_the_task_runs_kills_the_worker_and_propagates(
    pool: WorkerPool,
) -> None:
    spawns = Spawns()
    store_down = asyncio.Event()

    async def start(identity: ProcessIdentity) -> None:
        await spawns(identity)
        await store_down.wait()
        raise RuntimeError("store unavailable")

    running = asyncio.create_task(run(pool, call("spawn_and_sleep"), start))
    await spawns.called.wait()
    store_down.set()
    with pytest.raises(RuntimeError, match="store unavailable"):
        await running
    (worker,) = spawns.identities
    assert process_identity(worker.pid) is None
    await assert_group_dies(worker.pgid)


async def test_on_spawn_gets_the_workers_identity(pool: WorkerPool) -> None:
    spawns = Spawns()
    result = await run(pool, call("pid"), spawns)
    (identity,) = spawns.identities
    assert identity.pid == identity.pgid == int(result.output)
    assert identity == process_identity(identity.pid)


# --- limits and environment -------------------------------------------------------------------


async def test_cpu_limit_is_a_resource_limit(pool: WorkerPool) -> None:
    result = await run(pool, call("burn_cpu", limits=Limits(cpu_seconds=1)))
    assert (result.outcome, result.signal, result.reason) == (
        RunOutcome.RESOURCE_LIMIT,
        signal.SIGXCPU,
        "CPU limit of 1s reached (SIGXCPU)",
    )


async def test_memory_limit_is_a_resource_limit_and_recycles_the_worker(pool: WorkerPool) -> None:
    (worker,) = pool.stats().pids
    limits = Limits(memory_bytes=1024 * MiB)
    result = await run(pool, call("allocate", 2048 * MiB, limits=limits))
    assert (result.outcome, result.reason) == (
        RunOutcome.RESOURCE_LIMIT,
        f"memory limit of {1024 * MiB} bytes reached: MemoryError",
    )
    assert b"MemoryError" in result.output
    await wait_dead([worker])
    assert pool.stats().recycled == 1


async def test_limits_hold_during_the_task_and_are_restored_after_it(pool: WorkerPool) -> None:
    before = json.loads((await run(pool, call("rlimits"))).output)
    limits = Limits(memory_bytes=1024 * MiB, cpu_seconds=5, open_files=100, core_bytes=4096)
    during = json.loads((await run(pool, call("rlimits", limits=limits))).output)
    after = json.loads((await run(pool, call("rlimits"))).output)
    assert (during["as"], during["nofile"], during["core"]) == (1024 * MiB, 100, 4096)
    assert 5 <= during["cpu"] == during["cpu_hard"] - 1
    assert after == before
    inherited = {r: resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU)}
    assert (before["as"], before["cpu"], before["core"]) == (
        inherited[resource.RLIMIT_AS],
        inherited[resource.RLIMIT_CPU],
        0,  # the worker turns core dumps off for itself
    )
    if may_raise_hard_limits():  # even the lowered hard CPU limit was put back
        assert pool.stats().recycled == 0
    else:  # it cannot be raised again, so the worker asked to retire
        assert pool.stats().recycled == 1


def may_raise_hard_limits() -> bool:
    """Whether this process (and so its workers) has ``CAP_SYS_RESOURCE``."""
    status = Path("/proc/self/status").read_text()
    effective = int(status.split("CapEff:")[1].split()[0], 16)
    return bool(effective >> 24 & 1)  # CAP_SYS_RESOURCE is capability 24


async def test_memory_error_without_a_limit_is_an_exception(pool: WorkerPool) -> None:
    result = await run(pool, call("allocate", 1 << 60))
    assert (result.outcome, result.reason) == (RunOutcome.FAILED, "exception: MemoryError")


async def test_core_dumps_are_off_inside_a_task(pool: WorkerPool) -> None:
    assert (await run(pool, call("core_limit"))).output == b"0\n"


async def test_firing_env_is_set_for_the_task_only(pool: WorkerPool) -> None:
    names = ("SCHEDD_ATTEMPT", "SCHEDD_SCHEDULE", "APP_SETTING", "PYTHONPATH")
    env = {"SCHEDD_ATTEMPT": "2", "SCHEDD_SCHEDULE": "nightly"}
    during = await run(pool, call("environ", *names, env=env))
    after = await run(pool, call("environ", *names))
    base = {"APP_SETTING": "from the pool", "PYTHONPATH": REPO}
    assert json.loads(during.output) == {**env, **base}
    assert json.loads(after.output) == {"SCHEDD_ATTEMPT": None, "SCHEDD_SCHEDULE": None, **base}


# --- recycling and scaling --------------------------------------------------------------------


async def test_worker_is_recycled_after_max_tasks(make_pool: MakePool) -> None:
    pool = await make_pool(max_tasks_per_worker=2)
    pids = [await pid_of_next_run(pool) for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    await wait_dead([pids[0], pids[2]])
    assert pool.stats().recycled == 2


async def test_worker_is_recycled_above_the_rss_limit(make_pool: MakePool) -> None:
    pool = await make_pool(max_worker_rss_bytes=96 * MiB)
    small = [await pid_of_next_run(pool) for _ in range(2)]
    assert small[0] == small[1]  # a plain worker stays well below the limit
    assert (await run(pool, call("hoard", 128 * MiB))).outcome is RunOutcome.SUCCEEDED
    await wait_dead([small[0]])
    assert await pid_of_next_run(pool) != small[0]
    assert pool.stats().recycled == 1


async def test_prescale_grows_the_pool_up_to_max(make_pool: MakePool) -> None:
    pool = await make_pool(min_workers=1, max_workers=3)
    await pool.prescale(2)
    assert (pool.stats().size, pool.stats().idle) == (2, 2)
    await pool.prescale(10)
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.spawned) == (3, 3, 3)
    results = await asyncio.gather(*(run(pool, call("pid")) for _ in range(3)))
    assert {int(r.output) for r in results} <= set(stats.pids)
    assert pool.stats().spawned == 3


async def test_idle_workers_above_min_are_retired_after_the_idle_timeout(
    make_pool: MakePool,
) -> None:
    clock = FakeClock()
    pool = await make_pool(clock, min_workers=1, max_workers=3, idle_timeout_ms=1_000)
    await pool.prescale(3)
    workers = set(pool.stats().pids)
    clock.advance(500)
    used = await pid_of_next_run(pool)  # idle since 500 ms after the others
    clock.advance(500)
    await wait_dead(sorted(workers - {used}))
    assert pool.stats().pids == (used,)
    assert pool.stats().shrunk == 2
    clock.advance(60_000)  # at min: the last one stays
    assert await pid_of_next_run(pool) == used


async def test_runs_given_back_to_an_idle_pool_do_not_wake_the_shrink_each_time(
    make_pool: MakePool,
) -> None:
    # A worker given back puts the next shrink later, never sooner, so the shrink loop must
    # sleep on (waking it cost a future and a turn of the loop per run of a busy pool). The
    # wake-up is all the cost, and nothing but the loop's pending future shows it: white box.
    clock = FakeClock()
    pool = await make_pool(clock, min_workers=0, max_workers=1, idle_timeout_ms=1_000)
    fleet, untimed = pool._fleet, call("pid", timeout_ms=None)  # the loop's the only sleeper
    await run(pool, untimed)
    clock.unsettle()  # the worker is back; the woken loop has not looked yet
    await clock.settled()  # the loop sleeps until that worker is due to retire
    assert clock.next_deadline() == clock.monotonic_ms() + 1_000
    sleeping_on = fleet._changed
    for _ in range(20):
        clock.elapse(10)
        assert (await run(pool, untimed)).outcome is RunOutcome.SUCCEEDED
    assert fleet._changed is sleeping_on
    assert sleeping_on is not None
    assert not sleeping_on.done()
    clock.advance(1_000)  # its last run ended 1 s ago: the loop looks again and retires it
    await wait_dead(list(pool.stats().pids))
    assert (pool.stats().size, pool.stats().shrunk) == (0, 1)


async def test_close_stops_running_tasks_and_leaves_no_worker_process(
    make_pool: MakePool,
) -> None:
    pool = await make_pool(min_workers=2, max_workers=3)
    spawns = Spawns()
    running = asyncio.create_task(run(pool, call("spawn_and_sleep"), spawns))
    await spawns.called.wait()
    pids = pool.stats().pids
    assert len(pids) == 2
    await pool.close()
    result = await running
    assert (result.outcome, result.reason) == (RunOutcome.CANCELLED, "worker pool closed")
    assert pool.stats().size == 0
    assert all(process_identity(pid) is None for pid in pids)  # dead and reaped
    await assert_group_dies(spawns.identities[0].pgid)
    with pytest.raises(Unavailable, match="not running"):
        await pool.run(call("echo"), on_spawn=Spawns())


# --- starting workers -------------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_worker_that_never_says_ready_fails_the_run(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    python = script(tmp_path, f"echo $$ > {pidfile}; exec sleep 100")
    pool = await make_pool(python=python, min_workers=0, start_timeout_ms=300)
    result = await run(pool, call("echo"))
    assert (result.outcome, result.reason) == (
        RunOutcome.FAILED,
        "worker failed to start: no READY within 300ms (killed by SIGKILL)",
    )
    await wait_dead([int(pidfile.read_text())])
    assert (pool.stats().size, pool.stats().failed_starts) == (0, 1)


async def test_a_run_cancelled_while_its_worker_starts_leaves_no_process(
    make_pool: MakePool, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    os.mkfifo(started)
    python = script(tmp_path, f"echo $$ > {started}; exec sleep 100")
    pool = await make_pool(python=python, min_workers=0)
    running = asyncio.create_task(run(pool, call("echo")))
    pid = int(await asyncio.to_thread(started.read_text))
    assert pool.stats().starting == 1
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert process_identity(pid) is None  # killed and reaped
    assert pool.stats().size == 0


async def test_interpreter_that_exits_fails_the_run_with_its_output(
    make_pool: MakePool, tmp_path: Path
) -> None:
    python = script(tmp_path, "echo 'python: not really' >&2; exit 4")
    pool = await make_pool(python=python, min_workers=0)
    result = await run(pool, call("echo"))
    assert (result.outcome, result.reason) == (
        RunOutcome.FAILED,
        "worker failed to start: exited before READY (exit status 4); output: python: not really",
    )


async def test_interpreter_speaking_another_protocol_fails_the_run(
    make_pool: MakePool, tmp_path: Path
) -> None:
    python = tmp_path / "fake-python"
    python.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        "os.write(int(sys.argv[3]), b'READY\\n')\ntime.sleep(100)\n"
    )
    python.chmod(0o755)
    pool = await make_pool(python=str(python), min_workers=0)
    result = await run(pool, call("echo"))
    assert result.outcome is RunOutcome.FAILED
    assert result.reason is not None
    assert result.reason.startswith("worker failed to start: broke the protocol: frame length")
    assert pool.stats().protocol_errors == 1


async def test_missing_interpreter_fails_the_run(make_pool: MakePool) -> None:
    pool = await make_pool(python="/nonexistent/python", min_workers=0)
    result = await run(pool, call("echo"))
    assert result.outcome is RunOutcome.FAILED
    assert result.reason == (
        "worker failed to start: cannot run '/nonexistent/python': "
        "[Errno 2] No such file or directory: '/nonexistent/python'"
    )


async def test_start_fails_when_min_workers_cannot_start() -> None:
    pool = WorkerPool(settings(python="/nonexistent/python"), SystemClock())
    with pytest.raises(Unavailable, match="worker failed to start: cannot run"):
        await pool.start()
    assert pool.stats().size == 0


def test_settings_refuse_min_above_max() -> None:
    with pytest.raises(InvalidArgument, match="min=3 max=2"):
        settings(min_workers=3, max_workers=2)


# --- the worker program and its framing --------------------------------------------------------


def test_worker_program_is_python_3_9_syntax() -> None:
    ast.parse(Path(PYWORKER).read_text(), feature_version=(3, 9))


async def test_worker_runs_under_an_older_interpreter(make_pool: MakePool) -> None:
    old = await asyncio.to_thread(working_interpreter, "python3.9")
    if old is None:
        pytest.skip("no working python3.9 on this host")
    pool = await make_pool(python=old)
    result = await run(pool, call("show_context"))
    assert json.loads(result.output)["scheduled_for"] == "2026-01-01T00:00:00+00:00"


def working_interpreter(name: str) -> str | None:
    path = shutil.which(name)
    if path is None or subprocess.run([path, "-c", "pass"], capture_output=True).returncode:
        return None
    return path


def test_frames_survive_any_split_into_chunks() -> None:
    stream = encode({"type": "a", "text": "é" * 10}) + encode({"type": "b"})
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        messages = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert [m["type"] for m in messages] == ["a", "b"]
        assert not reader.partial


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ((0).to_bytes(4, "big"), "frame length 0 is outside"),
        ((MAX_FRAME + 1).to_bytes(4, "big"), f"frame length {MAX_FRAME + 1} is outside"),
        (b"\x00\x00\x00\x02\xff\xfe", "not UTF-8 JSON"),
        (b"\x00\x00\x00\x03{x}", "not UTF-8 JSON"),
        (b"\x00\x00\x00\x03NaN", "not UTF-8 JSON"),
        (b"\x00\x00\x00\x02[]", 'not a JSON object with a string "type"'),
        (b'\x00\x00\x00\x0b{"type": 1}', 'not a JSON object with a string "type"'),
    ],
)
def test_frame_reader_refuses_anything_outside_the_protocol(frame: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        FrameReader().feed(frame)


def test_encode_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ProtocolError, match="not encodable"):
        encode({"type": "run", "x": float("nan")})
    with pytest.raises(ProtocolError, match="exceeds"):
        encode({"type": "run", "x": "a" * MAX_FRAME})
