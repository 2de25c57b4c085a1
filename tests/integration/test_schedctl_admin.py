"""``schedctl status`` and ``reload``, and what schedctl says when it cannot reach a daemon."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Daemon, base_config

SCHEDCTL = [sys.executable, "-m", "schedd.cli.schedctl"]


def schedule(name: str, cron: str) -> str:
    return f'[schedules.{name}]\ncron = "{cron}"\ncommand = ["true"]\n'


def test_status_shows_node_lanes_and_workers(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(schedule("a", "0 3 * * *")))
    d.start()
    s = d.ctl_json("status")
    assert s["node"]["hostname"] == socket.gethostname()
    assert isinstance(s["lanes"], dict)
    assert isinstance(s["workers"]["alive"], int)
    assert s["workers"]["max"] == 4
    text = d.ctl("status").stdout
    assert f"node         {socket.gethostname()}" in text
    assert "/4 busy" in text


def test_reload_applies_the_files_schedules_and_reports_the_changes(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(
        base_config(
            schedule("kept", "0 1 * * *")
            + schedule("edited", "0 2 * * *")
            + schedule("dropped", "0 3 * * *")
        )
    )
    d.start()
    before = d.ctl_json("status")["config"]["sha256"]
    d.config.write_text(
        base_config(
            schedule("kept", "0 1 * * *")
            + schedule("edited", "0 4 * * *")
            + schedule("new", "0 5 * * *")
        )
    )
    r = d.ctl_json("reload")
    assert (r["added"], r["changed"], r["removed"], r["unchanged"]) == (
        ["new"],
        ["edited"],
        ["dropped"],
        1,
    )
    assert r["restart_required"] == []
    assert r["config"]["sha256"] != before
    names = {s["name"] for s in d.ctl_json("schedules", "list")["schedules"]}
    assert names == {"kept", "edited", "new"}
    assert d.ctl_json("schedules", "show", "edited")["trigger"]["cron"] == "0 4 * * *"
    assert "unchanged         3" in d.ctl("reload").stdout

    good = d.config.read_text()
    d.config.write_text(good + '[schedules.broken]\ncron = "61 * * * *"\ncommand = ["true"]\n')
    refused = d.ctl("reload", check=False)
    assert refused.returncode == 2
    assert "schedules.broken.cron" in refused.stderr
    assert d.ctl_json("status")["config"]["sha256"] == r["config"]["sha256"], "old config stays"


def run_schedctl(*args: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
    return subprocess.run(
        [*SCHEDCTL, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw
    )


def test_no_daemon_is_exit_7_with_the_socket_where_it_came_from_and_how_to_start(
    workdir: Path,
) -> None:
    missing = workdir / "missing.sock"
    by_flag = run_schedctl("--socket", str(missing), "status")
    assert by_flag.returncode == 7
    assert f"no schedd is listening on {missing}" in by_flag.stderr
    assert "came from --socket" in by_flag.stderr
    assert "schedd run --config FILE" in by_flag.stderr
    assert "systemctl start schedd" in by_flag.stderr

    # A socket file nobody listens on (a crashed daemon's): connection refused.
    stale = workdir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    by_env = run_schedctl("runs", "list", env={"SCHEDD_SOCKET": str(stale)})
    assert by_env.returncode == 7
    assert str(stale) in by_env.stderr
    assert "connection refused" in by_env.stderr
    assert "came from $SCHEDD_SOCKET" in by_env.stderr

    config = workdir / "schedd.toml"
    config.write_text(base_config(""))
    env_without = {k: v for k, v in os.environ.items() if k != "SCHEDD_SOCKET"}
    by_config = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "backlog"],
        capture_output=True,
        text=True,
        env=env_without,
    )
    assert by_config.returncode == 7
    assert str(workdir / "state" / "schedd.sock") in by_config.stderr
    assert f"came from [admin] socket in {config}" in by_config.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run schedctl as another user")
def test_a_socket_the_user_may_not_open_is_exit_4_saying_what_grants_access(
    workdir: Path,
) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*as_nobody, sys.executable, "-c", "pass"], cwd="/", check=False)
    if probe.returncode != 0:
        pytest.skip(f"uid 65534 cannot run this Python ({sys.executable})")
    workdir.chmod(0o755)
    path = workdir / "private.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        path.chmod(0o600)
        r = subprocess.run(
            [*as_nobody, *SCHEDCTL, "--socket", str(path), "status"],
            capture_output=True,
            text=True,
            cwd="/",
            check=False,
        )
    assert r.returncode == 4, r.stderr
    assert str(path) in r.stderr
    assert "[admin] readers" in r.stderr
    assert "[admin] operators" in r.stderr
    assert "group" in r.stderr


def test_sighup_reloads_like_schedctl_reload_and_survives_a_bad_file(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(base_config(schedule("kept", "0 1 * * *")))
    proc = d.start()
    d.config.write_text(base_config(schedule("kept", "0 1 * * *") + schedule("new", "0 5 * * *")))
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    # There is no reply to a signal: poll the observable result, each poll a real request.
    while "new" not in {s["name"] for s in d.ctl_json("schedules", "list")["schedules"]}:
        assert time.monotonic() < deadline, d.logs()
    assert "reloaded: 1 schedule(s) added" in d.logs()

    d.config.write_text("this is [not toml\n")
    proc.send_signal(signal.SIGHUP)
    while "reload on SIGHUP failed" not in d.logs():
        assert time.monotonic() < deadline, d.logs()
        d.ctl_json("status")  # the daemon keeps answering meanwhile
    assert proc.poll() is None
    assert {s["name"] for s in d.ctl_json("schedules", "list")["schedules"]} == {"kept", "new"}
