"""run_command, build_env and the process-group helpers, against real processes.

Nothing here sleeps to synchronise: runs are awaited to their result, timeouts are driven by a
fake clock where the exact sequence matters, and "the group is dead" is awaited through pidfds
(a dead member is a zombie until init reaps it, which in a container can take seconds, so
``killpg(pgid, 0)`` alone would be a race, not a check).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schedd.clock import SystemClock
from schedd.errors import InvalidArgument
from schedd.model import NO_LIMITS, Limits, RunOutcome
from schedd.workers.command import CommandRequest, run_command
from schedd.workers.environment import FIRING_VARS, NEVER_INHERIT, build_env
from schedd.workers.limits import LimitedLauncher
from schedd.workers.outcome import Ending, RunResult, classify
from schedd.workers.procs import ProcessIdentity, kill_group_if_ours, process_identity
from schedd.workers.spawn import DRAIN_MS
from tests.fakes import FakeClock
from tests.procs import assert_group_dies, proc_state, wait_dead

BASE_ENV = {"PATH": "/usr/bin:/bin"}
FIRING = {
    "SCHEDD_IDEMPOTENCY_KEY": "nightly@2026-01-01T00:00:00.000Z",
    "SCHEDD_SCHEDULED_FOR": "2026-01-01T00:00:00.000Z",
    "SCHEDD_ATTEMPT": "2",
    "SCHEDD_SCHEDULE": "nightly",
}


def request(*argv: str, **overrides: Any) -> CommandRequest:
    fields: dict[str, Any] = {
        "argv": argv,
        "cwd": None,
        "env": BASE_ENV,
        "shell": False,
        "timeout_ms": None,
        "kill_grace_ms": 5_000,
        "output_tail_bytes": 64 * 1024,
    }
    fields.update(overrides)
    return CommandRequest(**fields)


def sh(script: str, **overrides: Any) -> CommandRequest:
    return request(script, shell=True, **overrides)


class Spawns:
    """An ``on_spawn`` that remembers what it was given and says when it was called."""

    def __init__(self) -> None:
        self.identities: list[ProcessIdentity] = []
        self.called = asyncio.Event()

    async def __call__(self, identity: ProcessIdentity) -> None:
        self.identities.append(identity)
        self.called.set()

    @property
    def pgid(self) -> int:
        (identity,) = self.identities
        return identity.pgid


async def run(req: CommandRequest, clock: Any = None, spawns: Spawns | None = None) -> RunResult:
    async with asyncio.timeout(10):  # a hang fails here, not at pytest's global timeout
        return await run_command(req, clock or SystemClock(), on_spawn=spawns or Spawns())


class RecordingClock(FakeClock):
    """A fake clock that reports every deadline the code under test starts sleeping for."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: asyncio.Queue[int] = asyncio.Queue()

    async def sleep_until(self, monotonic_ms: int) -> None:
        self.sleeps.put_nowait(monotonic_ms)
        await super().sleep_until(monotonic_ms)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process group of its own, killed afterwards whatever the test did."""
    proc = subprocess.Popen(["sleep", "100"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# --- outcomes ---------------------------------------------------------------------------------


async def test_exit_zero_succeeds_with_its_output() -> None:
    result = await run(request("echo", "hello"))
    assert result == RunResult(RunOutcome.SUCCEEDED, 0, None, None, b"hello\n", False)


async def test_nonzero_exit_fails_with_its_status() -> None:
    result = await run(sh("echo partial; exit 3"))
    assert (result.outcome, result.exit_code, result.signal) == (RunOutcome.FAILED, 3, None)
    assert result.reason == "exit status 3"
    assert result.output == b"partial\n"


async def test_sigkill_of_itself_is_a_crash() -> None:
    result = await run(sh("kill -KILL $$"))
    assert (result.outcome, result.exit_code, result.signal) == (RunOutcome.CRASH, None, 9)
    assert result.reason == "killed by SIGKILL"


async def test_segfault_is_a_crash() -> None:
    result = await run(sh("kill -SEGV $$"))
    assert (result.outcome, result.signal, result.reason) == (
        RunOutcome.CRASH,
        signal.SIGSEGV,
        "killed by SIGSEGV",
    )


CPU = Limits(cpu_seconds=2)


@pytest.mark.parametrize(
    ("returncode", "kw", "expected"),
    [
        (0, {}, RunResult(RunOutcome.SUCCEEDED, 0, None, None)),
        (3, {}, RunResult(RunOutcome.FAILED, 3, None, "exit status 3")),
        (-11, {}, RunResult(RunOutcome.CRASH, None, 11, "killed by SIGSEGV")),
        (-99, {}, RunResult(RunOutcome.CRASH, None, 99, "killed by signal 99")),
        (
            -15,
            {"ending": Ending.TIMED_OUT, "timeout_ms": 5_000},
            RunResult(RunOutcome.TIMEOUT, None, 15, "timeout after 5s"),
        ),
        (
            -9,
            {"ending": Ending.TIMED_OUT, "timeout_ms": 1_500},
            RunResult(RunOutcome.TIMEOUT, None, 9, "timeout after 1500ms"),
        ),
        # Trapping SIGTERM and exiting 0 at the timeout is still not finishing in time.
        (
            0,
            {"ending": Ending.TIMED_OUT, "timeout_ms": 1_000},
            RunResult(RunOutcome.TIMEOUT, 0, None, "timeout after 1s"),
        ),
        (
            -15,
            {"ending": Ending.STOPPED, "stop_reason": "replaced by k"},
            RunResult(RunOutcome.CANCELLED, None, 15, "replaced by k"),
        ),
        # A CPU limit explains SIGXCPU, and SIGKILL only once the CPU time reached it.
        (
            -24,
            {"limits": CPU},
            RunResult(RunOutcome.RESOURCE_LIMIT, None, 24, "CPU limit of 2s reached (SIGXCPU)"),
        ),
        (
            -9,
            {"limits": CPU, "cpu_ms": 3_000},
            RunResult(RunOutcome.RESOURCE_LIMIT, None, 9, "CPU limit of 2s reached (SIGKILL)"),
        ),
        (
            -9,
            {"limits": CPU, "cpu_ms": 10},
            RunResult(RunOutcome.CRASH, None, 9, "killed by SIGKILL"),
        ),
        (-24, {}, RunResult(RunOutcome.CRASH, None, 24, "killed by SIGXCPU")),
    ],
)
def test_classify_counts_only_unexplained_signals_as_crashes(
    returncode: int, kw: dict[str, Any], expected: RunResult
) -> None:
    assert classify(returncode, **kw) == expected


@pytest.mark.parametrize(
    ("argv", "cwd", "message"),
    [
        (("nope-no-such-program",), None, "[Errno 2] No such file or directory"),
        (("{tmp}/not-executable",), None, "[Errno 13] Permission denied"),
        (("pwd",), "{tmp}/missing-dir", "[Errno 2] No such file or directory"),
        (("echo", "nul\0byte"), None, "embedded null byte"),
    ],
)
async def test_spawn_failure_is_a_failed_result_not_an_exception(
    tmp_path: Path, argv: tuple[str, ...], cwd: str | None, message: str
) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\necho hi\n")
    spawns = Spawns()
    result = await run(
        request(
            *(a.format(tmp=tmp_path) for a in argv),
            cwd=None if cwd is None else cwd.format(tmp=tmp_path),
        ),
        spawns=spawns,
    )
    assert (result.outcome, result.exit_code, result.signal) == (RunOutcome.FAILED, None, None)
    assert result.reason is not None
    assert result.reason.startswith("spawn failed: ")
    assert message in result.reason
    assert spawns.identities == []


def test_request_rejects_a_shell_command_of_several_strings() -> None:
    with pytest.raises(InvalidArgument, match="exactly one string"):
        request("echo", "a", shell=True)


def test_request_rejects_an_empty_argv() -> None:
    with pytest.raises(InvalidArgument, match="argv"):
        request()


# --- what the process sees --------------------------------------------------------------------


async def test_stdout_and_stderr_share_one_interleaved_tail() -> None:
    result = await run(sh("echo out; echo err >&2; echo out2"))
    assert result.output == b"out\nerr\nout2\n"


async def test_big_writer_keeps_only_the_tail_in_bounded_memory() -> None:
    tracemalloc.start()
    try:
        result = await run(request("head", "-c", "50000000", "/dev/zero"), None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result.outcome, result.output, result.output_truncated) == (
        RunOutcome.SUCCEEDED,
        b"\0" * 65536,
        True,
    )
    assert peak < 4 * 1024 * 1024


async def test_tail_is_the_true_end_of_the_output() -> None:
    result = await run(request("seq", "1", "300000", output_tail_bytes=1000))
    expected = "".join(f"{i}\n" for i in range(1, 300_001)).encode()
    assert result.output == expected[-1000:]
    assert result.output_truncated


async def test_short_output_is_not_truncated() -> None:
    result = await run(request("echo", "x", output_tail_bytes=2))
    assert (result.output, result.output_truncated) == (b"x\n", False)


async def test_child_environment_is_exactly_the_given_env() -> None:
    result = await run(request("env", env={"A": "1", "B": "two words"}))
    assert sorted(result.output.decode().splitlines()) == ["A=1", "B=two words"]


async def test_child_sees_firing_vars_and_none_of_the_daemons_own() -> None:
    daemon_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/root",
        "DB_PASSWORD": "secret",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "LD_PRELOAD": "/evil.so",
    }
    env = build_env(
        inherited=daemon_env,
        allow=["PATH", "NOTIFY_SOCKET", "LD_PRELOAD"],
        task_env={"REPORT": "daily"},
        firing=FIRING,
    )
    result = await run(request("env", env=env))
    seen = dict(line.split("=", 1) for line in result.output.decode().splitlines())
    assert seen == {"PATH": "/usr/bin:/bin", "REPORT": "daily", **FIRING}


def test_task_env_cannot_override_firing_vars_but_may_set_never_inherit_names() -> None:
    env = build_env(
        inherited={"LD_LIBRARY_PATH": "/daemon/lib", "TZ": "UTC"},
        allow=["LD_LIBRARY_PATH", "TZ"],
        task_env={"SCHEDD_ATTEMPT": "99", "TZ": "Europe/Paris", "LD_LIBRARY_PATH": "/task/lib"},
        firing=FIRING,
    )
    assert env == {"TZ": "Europe/Paris", "LD_LIBRARY_PATH": "/task/lib", **FIRING}


def test_never_inherit_covers_the_systemd_and_loader_variables() -> None:
    names = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"}
    names |= {"LISTEN_FDNAMES", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH"}
    assert names <= NEVER_INHERIT
    assert not NEVER_INHERIT & set(FIRING_VARS)


def test_firing_layer_refuses_names_that_are_not_firing_vars() -> None:
    with pytest.raises(InvalidArgument, match="LD_PRELOAD"):
        build_env(inherited={}, allow=[], task_env={}, firing={"LD_PRELOAD": "/evil.so"})


async def test_cwd_is_honoured(tmp_path: Path) -> None:
    result = await run(request("pwd", cwd=str(tmp_path)))
    assert result.output.decode() == f"{tmp_path}\n"


async def test_stdin_is_dev_null() -> None:
    result = await run(sh("readlink /proc/self/fd/0; cat; echo end"))
    assert (result.outcome, result.output) == (RunOutcome.SUCCEEDED, b"/dev/null\nend\n")


async def test_no_parent_fds_leak_into_the_child() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        os.dup2(fd, 200, inheritable=True)  # even an fd marked inheritable stays behind
        result = await run(request("ls", "/proc/self/fd"))
    finally:
        os.close(200)
        os.close(fd)
    # 0-2 are the child's stdio; 3 is the directory ls itself opened to list.
    assert sorted(result.output.split()) == [b"0", b"1", b"2", b"3"]


async def test_on_spawn_gets_the_leaders_pid_group_and_start_time() -> None:
    spawns = Spawns()
    result = await run(sh("cat /proc/$$/stat"), spawns=spawns)
    stat = result.output
    pid = int(stat.split()[0])
    fields = stat[stat.rindex(b")") + 2 :].split()
    pgid, session, start_ticks = int(fields[2]), int(fields[3]), int(fields[19])
    assert spawns.identities == [ProcessIdentity(pid=pid, pgid=pid, start_ticks=start_ticks)]
    assert (pgid, session) == (pid, pid)  # its own process group and session


# --- timeouts, leftovers, cancellation --------------------------------------------------------


async def test_timeout_kills_the_whole_group_including_grandchildren() -> None:
    spawns = Spawns()
    # A long grace: the run still ends at once because the whole group dies on SIGTERM.
    req = sh("sleep 100 & echo $!; sleep 100", timeout_ms=200, kill_grace_ms=60_000)
    result = await run(req, spawns=spawns)
    assert (result.outcome, result.signal, result.reason) == (
        RunOutcome.TIMEOUT,
        signal.SIGTERM,
        "timeout after 200ms",
    )
    await wait_dead([int(result.output)])
    await assert_group_dies(spawns.pgid)


async def test_timeout_sends_sigterm_then_sigkill_after_the_grace(tmp_path: Path) -> None:
    clock = RecordingClock()
    start = clock.monotonic_ms()
    spawns = Spawns()
    trapped = tmp_path / "trapped"
    os.mkfifo(trapped)
    req = sh(f'trap "" TERM; echo > {trapped}; sleep 100', timeout_ms=1_000, kill_grace_ms=5_000)
    running = asyncio.create_task(run(req, clock, spawns))

    assert await clock.sleeps.get() == start + 1_000
    await asyncio.to_thread(trapped.read_bytes)  # the task ignores SIGTERM from here on
    clock.advance(1_000)
    assert await clock.sleeps.get() == start + 6_000  # SIGTERM ignored: the grace runs
    assert proc_state(spawns.pgid) != "Z"
    clock.advance(5_000)
    result = await running

    assert (result.outcome, result.signal, result.reason) == (
        RunOutcome.TIMEOUT,
        signal.SIGKILL,
        "timeout after 1s",
    )
    await assert_group_dies(spawns.pgid)


async def test_leftover_background_job_is_killed_when_the_leader_exits() -> None:
    spawns = Spawns()
    result = await run(sh("sleep 100 & echo $!"), spawns=spawns)
    assert result.outcome is RunOutcome.SUCCEEDED
    await wait_dead([int(result.output)])
    await assert_group_dies(spawns.pgid)


async def test_escaped_process_holding_the_pipe_cannot_hang_the_run(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    clock = RecordingClock()
    # The grandchild leaves the group with setsid (a documented limit: it survives) and keeps
    # the output pipe open; the leader waits until it has escaped, then exits.
    script = (
        f'setsid sh -c "echo escaped; echo \\$\\$ > {pidfile}; exec sleep 100" & '
        f"while [ ! -s {pidfile} ]; do sleep 0.01; done"
    )
    running = asyncio.create_task(run(sh(script), clock))
    try:
        deadline = await clock.sleeps.get()
        assert deadline == clock.monotonic_ms() + DRAIN_MS
        clock.advance(DRAIN_MS)
        result = await running
        assert (result.outcome, result.output) == (RunOutcome.SUCCEEDED, b"escaped\n")
    finally:
        escaped = int(pidfile.read_text())
        assert proc_state(escaped) not in {"Z", "gone"}
        os.kill(escaped, signal.SIGKILL)
        await wait_dead([escaped])


async def test_cancellation_kills_the_group_and_reaps_the_leader() -> None:
    spawns = Spawns()
    running = asyncio.create_task(run(sh("sleep 100 & sleep 100"), spawns=spawns))
    await spawns.called.wait()
    # A silent run blocks nothing: another run completes meanwhile.
    assert (await run(request("echo", "other"))).output == b"other\n"
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (leader,) = spawns.identities
    assert process_identity(leader.pid) is None  # reaped, not left a zombie
    await assert_group_dies(leader.pgid)


async def test_failing_on_spawn_kills_the_group_and_propagates() -> None:
    seen: list[ProcessIdentity] = []

    async def store_down(identity: ProcessIdentity) -> None:
        seen.append(identity)
        raise RuntimeError("store unavailable")

    with pytest.raises(RuntimeError, match="store unavailable"):
        await run_command(sh("sleep 100 & sleep 100"), SystemClock(), on_spawn=store_down)
    (leader,) = seen
    assert process_identity(leader.pid) is None
    await assert_group_dies(leader.pgid)


# --- crash recovery helpers -------------------------------------------------------------------


def test_kill_group_if_ours_kills_a_live_group(sleeper: subprocess.Popen[bytes]) -> None:
    identity = process_identity(sleeper.pid)
    assert identity is not None
    assert kill_group_if_ours(identity)
    assert sleeper.wait(timeout=5) == -signal.SIGKILL


def test_kill_group_if_ours_refuses_a_reused_pid(sleeper: subprocess.Popen[bytes]) -> None:
    identity = process_identity(sleeper.pid)
    assert identity is not None
    older = ProcessIdentity(identity.pid, identity.pgid, identity.start_ticks - 1)
    assert not kill_group_if_ours(older)
    assert sleeper.poll() is None


def test_kill_group_if_ours_refuses_a_record_that_is_not_a_group_leader() -> None:
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 100 & echo $!; exec sleep 100"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert leader.stdout is not None
    try:
        member = process_identity(int(leader.stdout.readline()))
        assert member is not None
        assert member.pgid == leader.pid != member.pid
        assert not kill_group_if_ours(member)
        assert leader.poll() is None
        assert proc_state(member.pid) not in {"Z", "gone"}
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
        leader.stdout.close()


def leaderless_group() -> tuple[ProcessIdentity, int]:
    """A group whose leader has exited and been reaped, leaving a grandchild: its identity."""
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 100 & echo $!"], stdout=subprocess.PIPE, start_new_session=True
    )
    assert leader.stdout is not None
    with leader.stdout:
        grandchild = int(leader.stdout.readline())
    identity = process_identity(leader.pid)  # a zombie at worst: not reaped yet
    assert identity is not None
    leader.wait()
    assert process_identity(leader.pid) is None
    return identity, grandchild


async def test_kill_group_if_ours_kills_leftovers_of_a_vanished_leader() -> None:
    identity, grandchild = leaderless_group()
    assert kill_group_if_ours(identity)
    await wait_dead([grandchild])


def test_kill_group_if_ours_reports_nothing_killed_for_a_vanished_group() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    identity = process_identity(proc.pid)
    assert identity is not None
    proc.wait()
    assert process_identity(proc.pid) is None
    assert not kill_group_if_ours(identity)


# --- rlimits and stop requests ------------------------------------------------------------------


async def test_core_dumps_are_off_by_default_and_limits_apply_before_the_command_runs() -> None:
    limits = Limits(open_files=64, memory_bytes=512 * 1024 * 1024)
    result = await run(sh("ulimit -c; ulimit -n; ulimit -v", limits=limits))
    assert result.output.split() == [b"0", b"64", str(512 * 1024).encode()]


@pytest.fixture
def own_core_limit() -> Iterator[None]:
    """Core dumps allowed here, so a child that did not inherit 0 would show it; the limit
    ``inherit_defaults`` changes is put back afterwards."""
    before = resource.getrlimit(resource.RLIMIT_CORE)
    if before[1] == 0:
        pytest.skip("core dumps are off for good in this process (hard limit 0)")
    resource.setrlimit(resource.RLIMIT_CORE, (before[1], before[1]))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, before)


async def test_with_the_defaults_inherited_a_task_without_limits_is_spawned_directly(
    own_core_limit: None,
) -> None:
    launcher = LimitedLauncher()
    limited = Limits(open_files=64)
    assert launcher.argv(("/bin/true",), NO_LIMITS)[0] != "/bin/true"  # through prlimit
    launcher.inherit_defaults()
    assert launcher.argv(("/bin/true",), NO_LIMITS) == ("/bin/true",)
    assert launcher.argv(("/bin/true",), limited)[0] != "/bin/true"
    for limits, expected in ((NO_LIMITS, [b"0"]), (limited, [b"0", b"64"])):
        req = sh("ulimit -c; ulimit -n" if limits is limited else "ulimit -c", limits=limits)
        result = await run_command(req, SystemClock(), on_spawn=Spawns(), launcher=launcher)
        assert result.output.split() == expected, limits


async def test_a_task_past_its_cpu_limit_ends_resource_limit_not_crash() -> None:
    result = await run(request("sh", "-c", "while :; do :; done", limits=Limits(cpu_seconds=1)))
    assert result.outcome is RunOutcome.RESOURCE_LIMIT
    assert result.signal == signal.SIGXCPU


async def test_without_the_prlimit_program_limits_are_set_right_after_spawn() -> None:
    launcher = LimitedLauncher()
    launcher._prlimit = None  # as on a host without util-linux
    stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def on_spawn(identity: ProcessIdentity) -> None:
        seen.append(await asyncio.to_thread(Path(f"/proc/{identity.pid}/limits").read_text))
        stop.set_result("checked")

    result = await run_command(
        request("sleep", "100", limits=Limits(open_files=77)),
        SystemClock(),
        on_spawn=on_spawn,
        launcher=launcher,
        stop=stop,
    )
    assert result.outcome is RunOutcome.CANCELLED
    (limits,) = seen
    assert re.search(r"Max open files\s+77\s+77", limits)
    assert re.search(r"Max core file size\s+0\s+0", limits)


async def test_a_stop_request_takes_the_group_down_and_ends_cancelled() -> None:
    spawns = Spawns()
    stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    pending = asyncio.ensure_future(
        run_command(
            sh("sleep 100 & sleep 100", kill_grace_ms=60_000),
            SystemClock(),
            on_spawn=spawns,
            stop=stop,
        )
    )
    await spawns.called.wait()
    stop.set_result("replaced by job@2026")
    result = await asyncio.wait_for(pending, 10)
    assert (result.outcome, result.signal, result.reason) == (
        RunOutcome.CANCELLED,
        signal.SIGTERM,
        "replaced by job@2026",
    )
    await assert_group_dies(spawns.pgid)


async def test_a_missing_program_is_a_spawn_failure_even_through_prlimit() -> None:
    result = await run(request("no-such-program-here"))
    assert result.reason is not None
    assert "No such file or directory" in result.reason
    assert result.outcome is RunOutcome.FAILED
