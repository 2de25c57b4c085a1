"""A real daemon whose wall clock steps an hour while ``CLOCK_MONOTONIC`` runs on (issue 5).

The component tests (``tests/component/test_clock_jumps.py``) prove the jump rules on a fake
``Clock``; this proves them on ``schedd run`` itself, with the real ``SystemClock``, under
libfaketime (``LD_PRELOAD``). The fake time comes from a file the test rewrites while the daemon
runs (``FAKETIME_TIMESTAMP_FILE`` with ``FAKETIME_NO_CACHE=1``), holding an offset from the real
time, and ``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves the monotonic clock alone: exactly what
``date -s`` or an NTP step does to a host. Rewriting the offset is the clock step.

Schedules run on a 10-minute grid and the offsets are chosen so the faked clock sits well away
from every boundary before and after a step: which occurrences were skipped over is then exact,
not a matter of timing. Every wait is on an answer from the daemon, with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schedd.errors import NotFound
from schedd.keys import format_instant, parse_instant
from tests.integration.conftest import Daemon, TaskSignal, base_config

MISSING = "faketime library not found: install Debian package faketime or pip install libfaketime"
DAY_S = 86_400
HOUR_S = 3_600
GRID_S = 600  # the coarse schedules fire every 10 minutes, on the UTC grid
#: The daemon samples wall - monotonic at every wake-up, at least once a second.
DETECT_WITHIN_S = 15
#: A forward step is noticed within a second and the catch-up drain starts at 10 firings/s.
PROMPT_MS = 10_000
#: What becomes of the six 10-minute occurrences a forward step of an hour skips over, and of
#: the next one, under each misfire policy (max_catchup = 2); None: never fired nor recorded.
#: The reason of the one row recorded for a fast schedule's long run of missed occurrences.
ABOUT_MISSED = re.compile(r"misfire: about (\d+) occurrence\(s\) missed their grace")
ONCE_ALL_SKIP = {
    "once": [None, None, None, None, None, "succeeded", None],
    "all": [None, None, "skipped", "skipped", "succeeded", "succeeded", None],
    "skip": [None, None, None, None, "skipped", "skipped", None],
}


def _system_libraries() -> list[Path]:
    """Where distributions install the preload library (Debian: package ``libfaketime``)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    return [
        Path(f"/usr/lib/{multiarch}/faketime/libfaketime.so.1"),
        Path("/usr/lib64/faketime/libfaketime.so.1"),
        Path("/usr/lib/faketime/libfaketime.so.1"),
        Path("/usr/local/lib/faketime/libfaketime.so.1"),
    ]


def _pip_library() -> Path | None:
    """The copy the PyPI package ``libfaketime`` ships, located through its public API."""
    try:
        import libfaketime  # type: ignore[import-untyped]
    except ImportError:
        return None
    _, env = libfaketime.get_reload_information()
    return Path(env["LD_LIBRARY_PATH"]) / env["LD_PRELOAD"].split(":")[0]


def find_library() -> Path | None:
    candidates = [_pip_library(), *_system_libraries()]
    return next((p for p in candidates if p is not None and p.is_file()), None)


class FakeWallClock:
    """The wall clock of processes started with :meth:`env`: the real time plus an offset (whole
    seconds) read from a file on every clock call, so rewriting the file steps their clock."""

    def __init__(self, library: Path, root: Path) -> None:
        self.library = library
        self.file = root / "faketime.offset"
        self.offset_s = 0
        self.set_offset(0)

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(self.library),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def set_offset(self, offset_s: int) -> None:
        # Replaced whole, so a clock call never reads a half-written file.
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+d}\n")
        os.replace(tmp, self.file)
        self.offset_s = offset_s

    def now_ms(self) -> int:
        """What the faked clock reads now (the test itself runs on the real clock)."""
        return time.time_ns() // 1_000_000 + self.offset_s * 1000

    def offset_at_phase(self, at_least_s: int, phase_s: int) -> int:
        """An offset of at least ``at_least_s`` that puts the faked clock ``phase_s`` (±0.5 s)
        past a boundary of the 10-minute grid, so no occurrence is due within seconds of it."""
        real_ms = time.time_ns() // 1_000_000
        shift_ms = (phase_s * 1000 - (real_ms + at_least_s * 1000)) % (GRID_S * 1000)
        return at_least_s + round(shift_ms / 1000)


@pytest.fixture
def fake_clock(workdir: Path) -> FakeWallClock:
    library = find_library()
    if library is None:
        pytest.skip(MISSING)
    clock = FakeWallClock(library, workdir)
    # A library that is there but cannot preload here (another architecture, say) is ignored by
    # ld.so with a warning; find that out once, on a plain process, not from a daemon's results.
    clock.set_offset(DAY_S)
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time_ns() // 1_000_000)"],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != "FAKETIME"}, **clock.env()},
        timeout=30,
    )
    if probe.returncode != 0 or abs(int(probe.stdout or 0) - clock.now_ms()) > 10_000:
        pytest.skip(f"{library} does not fake the time here: {probe.stderr.strip()}")
    return clock


@pytest.fixture
def start_faked(
    fake_clock: FakeWallClock, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Daemon], None]:
    """Start a daemon under libfaketime; schedctl and the test keep the real clock."""

    def start(d: Daemon) -> None:
        with monkeypatch.context() as env:
            env.delenv("FAKETIME", raising=False)  # it would take priority over the file
            for name, value in fake_clock.env().items():
                env.setenv(name, value)
            d.start()
        status = d.ctl_json("status")
        assert abs(parse_instant(status["now"]) - fake_clock.now_ms()) < 5_000, (
            "the daemon does not run on the faked clock",
            status["now"],
        )

    return start


def schedule(name: str, every: str, **policies: str | int) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in policies.items())
    return f"""
[schedules.{name}]
every = "{every}"
jitter = "0s"
command = ["true"]
{extra}"""


def wait_status(d: Daemon, ok: Callable[[Any], bool], within_s: float) -> Any:
    """Poll ``status`` until ``ok`` holds; each poll is a full schedctl round trip."""
    deadline = time.monotonic() + within_s
    while not ok(status := d.ctl_json("status")):
        assert time.monotonic() < deadline, (status, d.logs())
    return status


def wait_finished(d: Daemon, schedule_name: str, count: int) -> None:
    d.ctl("runs", "wait", "--schedule", schedule_name, "--count", str(count), "--timeout", "30s")


def clock_jumps_metric(d: Daemon) -> float:
    text = d.ctl("metrics").stdout
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "schedd_clock_jumps_total"
    )


@dataclass(frozen=True)
class Run:
    scheduled_for_ms: int
    started_ms: int
    key: str


def runs_of(d: Daemon, schedule_name: str) -> list[Run]:
    runs = d.ctl_json("runs", "list", "--schedule", schedule_name, "--limit", "1000")["runs"]
    return [
        Run(parse_instant(r["key"].rsplit("@", 1)[1]), parse_instant(r["started_at"]), r["key"])
        for r in runs
    ]


def firing(d: Daemon, name: str, occurrence_ms: int) -> Any:
    return d.call("firings.show", key=f"{name}@{format_instant(occurrence_ms)}")


def state_of(d: Daemon, name: str, occurrence_ms: int) -> str | None:
    """The firing's state, or None if the occurrence was neither fired nor recorded."""
    f = firing_or_none(d, name, occurrence_ms)
    return None if f is None else str(f["state"])


def finished(d: Daemon, name: str) -> int:
    """How many of the schedule's firings are in a final state (skipped ones included)."""
    return int(d.call("wait", schedule=name, count=1_000_000, timeout_ms=0)["finished"])


def firing_or_none(d: Daemon, name: str, occurrence_ms: int) -> Any:
    try:
        return firing(d, name, occurrence_ms)
    except NotFound:
        return None


def test_a_forward_step_is_reported_and_the_skipped_hour_follows_each_misfire_policy(
    daemon_factory: Any, fake_clock: FakeWallClock, start_faked: Callable[[Daemon], None]
) -> None:
    grace = {"misfire_grace": "30s"}
    d: Daemon = daemon_factory(
        base_config(
            schedule("once", "10m", misfire="fire_once", **grace)
            + schedule("all", "10m", misfire="fire_all", max_catchup=2, overlap="allow", **grace)
            + schedule("skip", "10m", misfire="skip", max_catchup=2, **grace)
            + schedule("tick", "2s", misfire="skip", max_catchup=1, misfire_grace="3s")
        )
    )
    # A day ahead of the real time and 30 s past a grid boundary: the next one is 9 minutes off.
    fake_clock.set_offset(fake_clock.offset_at_phase(DAY_S, 30))
    start_faked(d)
    wait_finished(d, "tick", 2)
    assert d.ctl_json("status")["clock"]["jumps"] == 0

    before_ms = fake_clock.now_ms()
    assert before_ms % (GRID_S * 1000) < (GRID_S - 60) * 1000, "too slow to stay off the grid"
    # More than an hour forward, landing 5 minutes past a boundary: every occurrence in between
    # is older than its 30 s grace (missed), and the next one is 5 minutes away.
    old_offset = fake_clock.offset_s
    fake_clock.set_offset(fake_clock.offset_at_phase(old_offset + HOUR_S, 300))
    after_ms = fake_clock.now_ms()
    step_ms = (fake_clock.offset_s - old_offset) * 1000
    first = before_ms // (GRID_S * 1000) + 1
    skipped_over = [k * GRID_S * 1000 for k in range(first, after_ms // (GRID_S * 1000) + 1)]
    assert len(skipped_over) == 6, "an hour and a bit spans six 10-minute boundaries"

    status = wait_status(d, lambda s: s["clock"]["jumps"] > 0, DETECT_WITHIN_S)
    assert status["clock"]["jumps"] == 1
    assert abs(status["clock"]["last_jump_ms"] - step_ms) < 500, (status["clock"], step_ms)
    assert f"wall clock jumped forward by {status['clock']['last_jump_ms']} ms" in d.logs()
    assert clock_jumps_metric(d) == 1

    # once: one firing, keyed by the latest missed occurrence; all: the newest max_catchup fire
    # and the max_catchup before them are recorded skipped; skip: max_catchup rows recorded.
    # Every recorded reason counts all six. The next boundary, 5 minutes ahead, has not fired.
    wait_finished(d, "once", 1)
    wait_finished(d, "all", 4)
    wait_finished(d, "skip", 2)
    occurrences = [*skipped_over, skipped_over[-1] + GRID_S * 1000]
    shown = {name: [state_of(d, name, occ) for occ in occurrences] for name in ONCE_ALL_SKIP}
    assert shown == ONCE_ALL_SKIP
    for name in ONCE_ALL_SKIP:
        for occ, state in zip(occurrences, shown[name], strict=True):
            if state == "skipped":
                assert (
                    firing(d, name, occ)["reason"] == "misfire: 6 occurrence(s) missed their grace"
                )

    # tick keeps its 2 s rhythm on the new clock. Of the ~1900 occurrences skipped over (more
    # than the planner lists before it fast-forwards) none ran, and one row is recorded whose
    # reason counts them all, approximately.
    wait_finished(d, "tick", finished(d, "tick") + 3)
    ticks = runs_of(d, "tick")
    assert len([r for r in ticks if r.scheduled_for_ms > after_ms - 6_000]) >= 2, ticks
    assert not [r for r in ticks if before_ms + 3_000 < r.scheduled_for_ms < after_ms - 8_000]
    near_step = range(after_ms - after_ms % 2000 - 10_000, after_ms + 6_000, 2000)
    recorded = [f for occ in near_step if (f := firing_or_none(d, "tick", occ))]
    counts = [int(m[1]) for f in recorded if (m := ABOUT_MISSED.fullmatch(f["reason"] or ""))]
    assert len(counts) == 1, recorded
    assert abs(counts[0] - step_ms // 2000) <= 5, (recorded, step_ms)

    # Never early: every run started at or after its occurrence, on the daemon's (faked) clock.
    # And the timers were re-mapped: the catch-up ran at once, not when the monotonic clock
    # reached the old due time (nor at the next refill of the wheel).
    for name in ("once", "all", "tick"):
        for r in runs_of(d, name):
            assert r.started_ms >= r.scheduled_for_ms, r
    for name in ("once", "all"):
        late = [r for r in runs_of(d, name) if r.started_ms >= after_ms + PROMPT_MS]
        assert not late, (late, after_ms)
    assert d.stop() == 0


def test_a_backward_step_is_reported_and_nothing_fires_again_or_early(
    daemon_factory: Any, fake_clock: FakeWallClock, start_faked: Callable[[Daemon], None]
) -> None:
    d: Daemon = daemon_factory(base_config(schedule("tick", "1s")))
    fake_clock.set_offset(DAY_S)
    started_ms = fake_clock.now_ms()
    start_faked(d)
    wait_finished(d, "tick", 3)

    fake_clock.set_offset(DAY_S - HOUR_S)
    # No firing committed before the step can be for a later instant than this.
    step_at_ms = fake_clock.now_ms() + HOUR_S * 1000
    status = wait_status(d, lambda s: s["clock"]["jumps"] > 0, DETECT_WITHIN_S)
    assert status["clock"]["jumps"] == 1
    assert abs(status["clock"]["last_jump_ms"] + HOUR_S * 1000) < 500, status["clock"]
    assert f"wall clock jumped back by {-status['clock']['last_jump_ms']} ms" in d.logs()
    assert clock_jumps_metric(d) == 1
    tick = d.ctl_json("schedules", "show", "tick")
    high_water = parse_instant(tick["fired_through_at"])
    assert high_water <= step_at_ms, "fired early: the step hid the occurrence's due time"
    assert parse_instant(tick["next_fire_at"]) == high_water + 1000

    # A schedule added now lives on the stepped-back clock; three of its runs mean the daemon
    # has planned for 3 s of it, while tick's next occurrence is an hour ahead of that clock.
    d.ctl("schedules", "add", "probe", "--every", "1s", "--jitter", "0s", "--", "true")
    wait_finished(d, "probe", 3)
    for r in runs_of(d, "probe"):
        assert r.scheduled_for_ms < high_water - HOUR_S * 1000 + 60_000, (r, high_water)
        assert r.started_ms >= r.scheduled_for_ms, r

    # Nothing at or before the high-water mark fired again, nothing after it fired early: tick's
    # firings are the ones from before the step (one of them may have started after it).
    tick = d.ctl_json("schedules", "show", "tick")
    assert parse_instant(tick["fired_through_at"]) == high_water
    assert parse_instant(tick["next_fire_at"]) == high_water + 1000
    ticks = runs_of(d, "tick")
    assert len({r.key for r in ticks}) == len(ticks)
    assert all(started_ms - 1000 <= r.scheduled_for_ms <= high_water for r in ticks), ticks
    assert d.stop() == 0


def test_a_firing_queued_on_time_is_no_misfire_after_a_forward_step(
    daemon_factory: Any,
    fake_clock: FakeWallClock,
    start_faked: Callable[[Daemon], None],
    workdir: Path,
) -> None:
    started = TaskSignal(workdir / "started.fifo")
    release = workdir / "release.fifo"
    os.mkfifo(release)
    d: Daemon = daemon_factory(base_config("").replace("[workers]\nmax = 4", "[workers]\nmax = 1"))
    start_faked(d)
    # The only worker is held by a task that waits for the test; then a firing of a
    # misfire = "skip" schedule is committed on time and queues behind it.
    hold = f"echo go > {started.path}; read x < {release}"
    d.ctl("submit", "--key", "hold", "--", "/bin/sh", "-c", hold)
    started.wait()
    at_ms = fake_clock.now_ms()
    at = format_instant(at_ms)
    d.ctl("schedules", "add", "queued", "--at", at, "--misfire", "skip", "--", "true")
    deadline = time.monotonic() + 30
    while state_of(d, "queued", at_ms) != "committed":
        assert time.monotonic() < deadline, d.logs()

    fake_clock.set_offset(fake_clock.offset_s + HOUR_S)
    wait_status(d, lambda s: s["clock"]["jumps"] > 0, DETECT_WITHIN_S)
    with release.open("w") as f:
        f.write("done\n")
    # It waited seconds for the worker, not the hour the wall clock moved: it runs.
    assert d.ctl_json("runs", "wait", f"queued@{at}")["firing"]["state"] == "succeeded"
    assert d.stop() == 0
