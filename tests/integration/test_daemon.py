"""The core daemon through its real interfaces: config file, process signals, schedctl, socket."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schedd.store.schema import SCHEMA_VERSION
from tests.integration.conftest import Daemon, TaskSignal, base_config

TICK = """
[schedules.tick]
every = "1s"
jitter = "0s"
shell = true
command = 'echo "out $SCHEDD_SCHEDULE $SCHEDD_ATTEMPT"; echo "err line" >&2'
"""


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def soon(seconds: float) -> str:
    return rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))


def one_shot(name: str, at: str, script: str) -> str:
    return f"""
[schedules.{name}]
at = "{at}"
shell = true
command = '{script}'
"""


def test_a_schedule_fires_and_every_run_is_recorded(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(TICK))
    d.start()
    d.ctl("runs", "wait", "--schedule", "tick", "--count", "2", "--timeout", "30s")

    runs = d.ctl_json("runs", "list", "--schedule", "tick")["runs"]
    assert len(runs) >= 2
    assert {r["state"] for r in runs[-2:]} == {"succeeded"}
    assert all(r["key"].startswith("tick@") and r["key"].endswith("Z") for r in runs)
    # A firing never starts before its scheduled instant.
    for r in runs:
        assert r["started_at"] >= r["key"].split("@", 1)[1]

    shown = d.ctl_json("runs", "show", str(runs[-1]["id"]))
    assert shown["exit_code"] == 0
    assert shown["duration_ms"] is not None
    assert "out tick 1" in shown["output"]
    assert "err line" in shown["output"]
    human = d.ctl("runs", "show", str(runs[-1]["id"])).stdout
    assert "out tick 1" in human
    assert "exit code" in human

    listing = d.ctl("runs", "list").stdout
    assert runs[0]["key"] in listing


def test_status_and_schedules_answer_in_json_and_text(daemon_factory: Any) -> None:
    cron = """
[schedules.berlin]
cron = "30 2 * * *"
timezone = "Europe/Berlin"
command = ["true"]
"""
    d: Daemon = daemon_factory(base_config(cron))
    d.start()
    status = d.ctl_json("status")
    assert status["pid"] == d.proc.pid  # type: ignore[union-attr]
    assert status["store"]["synchronous"] == "full"
    assert status["store"]["schema_version"] == SCHEMA_VERSION
    assert status["schedules"] == 1
    assert len(status["config"]["sha256"]) == 64
    assert "synchronous=full" in d.ctl("status").stdout

    names = [s["name"] for s in d.ctl_json("schedules", "list")["schedules"]]
    assert names == ["berlin"]
    shown = d.ctl_json("schedules", "show", "berlin", "--next", "10")
    assert len(shown["next"]) == 10
    for occ in shown["next"]:
        assert occ["utc"].endswith("Z")
        assert occ["local"][11:19] in {"02:30:00", "03:00:00"}  # 03:00 on a spring-forward night
    assert shown["task"]["command"] == ["true"]
    assert "Europe/Berlin" in d.ctl("schedules", "show", "berlin").stdout

    missing = d.ctl("schedules", "show", "nope", check=False)
    assert missing.returncode == 3
    assert "'nope'" in missing.stderr


def test_sigkill_during_a_run_reruns_it_with_the_same_key_and_next_attempt(
    daemon_factory: Any, workdir: Path
) -> None:
    probe = workdir / "probe.log"
    recorded = TaskSignal(workdir / "recorded.fifo")
    at = soon(1.5)
    # Attempt 1 records itself, says so, and hangs; any later attempt records itself and succeeds.
    script = (
        f'echo "$SCHEDD_IDEMPOTENCY_KEY $SCHEDD_ATTEMPT $$" >> {probe}; echo >> {recorded.path};'
        ' [ "$SCHEDD_ATTEMPT" != 1 ] || exec sleep 300'
    )
    d: Daemon = daemon_factory(base_config(one_shot("once", at, script)))
    d.start()
    key = f"once@{at}"
    running = d.call("wait", key=key, states=["running"], timeout_ms=30_000)
    assert running["done"], d.logs()
    recorded.wait()  # kept open: attempt 2 writes to it too, and a pipe without a reader blocks
    first_key, attempt, pid = probe.read_text().split()
    assert (first_key, attempt) == (key, "1")
    orphan = os.pidfd_open(int(pid))

    d.stop(signal.SIGKILL)
    d.start()
    final = d.call("wait", key=key, timeout_ms=60_000)
    assert final["done"], d.logs()
    assert final["firing"]["state"] == "succeeded"
    assert final["firing"]["attempt"] == 2

    lines = [line.split() for line in probe.read_text().splitlines()]
    assert [(k, a) for k, a, _ in lines] == [(key, "1"), (key, "2")]
    # The first run's process group did not survive the restart: no two runs of one key overlap.
    assert select.select([orphan], [], [], 10)[0] == [orphan], "the orphaned run was not killed"
    os.close(orphan)
    recorded.close()
    runs = d.ctl_json("runs", "list", "--schedule", "once")["runs"]
    assert [(r["attempt"], r["state"]) for r in runs] == [(2, "succeeded"), (1, "lost")]


def test_sigterm_lets_running_tasks_finish_and_exits_0(daemon_factory: Any, workdir: Path) -> None:
    at = soon(1.5)
    marker = workdir / "finished"
    d: Daemon = daemon_factory(base_config(one_shot("slow", at, f"sleep 2; touch {marker}")))
    d.start()
    assert d.call("wait", key=f"slow@{at}", states=["running"], timeout_ms=30_000)["done"]
    assert d.stop(signal.SIGTERM) == 0
    assert marker.exists(), "the running task was allowed to finish"
    d.start()
    runs = d.ctl_json("runs", "list")["runs"]
    assert [(r["state"], r["attempt"]) for r in runs] == [("succeeded", 1)], "and is not re-run"


def test_a_one_shot_missed_while_down_fires_once(daemon_factory: Any) -> None:
    job = """
[schedules.missed]
at = "2026-01-01T00:00:00Z"
command = ["true"]
"""
    d: Daemon = daemon_factory(base_config(job))
    d.start()
    final = d.call("wait", key="missed@2026-01-01T00:00:00.000Z", timeout_ms=30_000)
    assert (final["firing"]["state"], final["firing"]["attempt"]) == ("succeeded", 1)
    d.stop()
    d.start()
    assert d.ctl_json("schedules", "show", "missed")["next_fire_at"] is None
    assert len(d.ctl_json("runs", "list")["runs"]) == 1


def test_a_second_daemon_on_the_same_store_refuses_to_start(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(TICK))
    first = d.start()
    second = subprocess.run(
        [sys.executable, "-m", "schedd.cli.schedd", "run", "--config", str(d.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 7
    assert f"pid {first.pid}" in second.stderr
    assert d.ctl_json("status")["pid"] == first.pid, "the running daemon is untouched"


def test_schedctl_finds_the_socket_from_config_or_environment(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(TICK))
    d.start()
    base = [sys.executable, "-m", "schedd.cli.schedctl"]
    by_config = subprocess.run(
        [*base, "--config", str(d.config), "status", "--json"], capture_output=True, text=True
    )
    assert by_config.returncode == 0, by_config.stderr
    env = {**os.environ, "SCHEDD_SOCKET": str(d.socket)}
    by_env = subprocess.run([*base, "status"], capture_output=True, text=True, env=env)
    assert by_env.returncode == 0, by_env.stderr


def test_schedctl_says_which_socket_it_tried_when_no_daemon_runs(workdir: Path) -> None:
    sock = workdir / "nothing.sock"
    r = subprocess.run(
        [sys.executable, "-m", "schedd.cli.schedctl", "--socket", str(sock), "status"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 7
    assert str(sock) in r.stderr
    assert "schedd run --config" in r.stderr


def test_check_config_names_the_exact_key(workdir: Path) -> None:
    def check(text: str) -> subprocess.CompletedProcess[str]:
        path = workdir / "c.toml"
        path.write_text(text)
        return subprocess.run(
            [sys.executable, "-m", "schedd.cli.schedd", "check-config", str(path)],
            capture_output=True,
            text=True,
        )

    ok = check(base_config(TICK))
    assert ok.returncode == 0, ok.stderr
    bad = check(base_config('[schedules.backup]\ncron = "61 * * * *"\ncommand = ["true"]\n'))
    assert bad.returncode == 1
    assert 'schedules.backup.cron: invalid cron expression "61 * * * *"' in bad.stderr
    typo = check(base_config(TICK.replace("jitter", "jiter")))
    assert typo.returncode == 1
    assert "schedules.tick.jiter" in typo.stderr
    example = Path(__file__).parents[2] / "schedd.toml.example"
    assert check(example.read_text()).returncode == 0
    # `run` refuses a bad file with EX_CONFIG, which the unit does not restart into.
    (workdir / "c.toml").write_text(base_config(TICK.replace("jitter", "jiter")))
    started = subprocess.run(
        [sys.executable, "-m", "schedd.cli.schedd", "run", "--config", str(workdir / "c.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 78
    assert "schedules.tick.jiter" in started.stderr
