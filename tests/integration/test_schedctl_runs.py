"""``schedctl submit`` and ``schedctl runs`` against a real daemon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import Daemon, base_config

REPO = Path(__file__).parents[2]
FUTURE = "2099-01-01T00:00:00.000Z"


def submit(d: Daemon, *flags: str, argv: list[str] | None = None) -> Any:
    """``submit --json``; ``--json`` must come before the ``--`` that starts ARGV."""
    tail = ["--", *argv] if argv else []
    return json.loads(d.ctl("submit", *flags, "--json", *tail).stdout)


def test_submitted_jobs_run_once_per_key_and_their_runs_can_be_read(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(
        base_config("").replace(
            "[workers]\nmax = 4", f'[workers]\nmax = 4\npythonpath = ["{REPO}"]'
        )
    )
    d.start()
    first = submit(d, "--key", "job-1", argv=["/bin/sh", "-c", "printf 'a\\nb'; echo err >&2"])
    assert first["created"] is True
    assert first["firing"]["schedule"] == "@submit"
    again = d.ctl("submit", "--key", "job-1", "--", "/bin/false")
    assert again.returncode == 0
    assert again.stdout.startswith("job-1: already exists")

    assert (
        d.ctl("runs", "wait", "job-1", "--timeout", "30s").stdout
        == "job-1: succeeded (attempt 1)\n"
    )
    [run] = d.ctl_json("runs", "list", "--key", "job-1")["runs"]
    shown = d.ctl_json("runs", "show", str(run["id"]))
    assert shown["exit_code"] == 0
    assert shown["key"] == "job-1"
    # `runs output` is the captured tail, byte for byte, and nothing else.
    assert d.ctl("runs", "output", str(run["id"])).stdout == shown["output"] == "a\nberr\n"
    assert "exit code" in d.ctl("runs", "show", str(run["id"])).stdout

    failing = submit(d, "--retries", "0", argv=["/bin/sh", "-c", "exit 3"])
    key = failing["firing"]["key"]
    assert key.startswith("submit:")
    assert d.ctl_json("runs", "wait", key)["firing"]["state"] == "dead"
    failed = d.ctl_json("runs", "list", "--state", "failed")["runs"]
    assert [r["key"] for r in failed] == [key]
    both = d.ctl_json("runs", "list", "--state", "failed", "--state", "succeeded")["runs"]
    assert {r["key"] for r in both} == {key, "job-1"}
    assert d.ctl_json("runs", "list", "--since", FUTURE)["runs"] == []
    assert len(d.ctl_json("runs", "list", "--since", "2020-01-01T00:00:00Z")["runs"]) == 2
    assert len(d.ctl_json("runs", "list", "--limit", "1")["runs"]) == 1
    assert d.ctl("runs", "list", "--state", "bogus", check=False).returncode == 2

    py = submit(
        d, "--python", "tests.pytasks:echo", "--args", '[1, "x"]', "--kwargs", '{"k": true}'
    )
    d.ctl("runs", "wait", py["firing"]["key"])
    [py_run] = d.ctl_json("runs", "list", "--key", py["firing"]["key"])["runs"]
    output = d.ctl("runs", "output", str(py_run["id"])).stdout
    assert json.loads(output) == {"args": [1, "x"], "kwargs": {"k": True}}

    missing = d.ctl("runs", "show", "999999", check=False)
    assert missing.returncode == 3
    assert d.ctl("runs", "output", "999999", check=False).returncode == 3
    bad_task = d.ctl("submit", "--python", "no_colon", check=False)
    assert bad_task.returncode == 2
    assert "task.python" in bad_task.stderr


def test_runs_wait_for_a_key_a_state_or_a_schedule(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(""))
    d.start()
    later = submit(d, "--at", FUTURE, "--key", "later", argv=["true"])
    assert later["firing"]["state"] == "scheduled"
    assert later["firing"]["due_at"] == FUTURE

    timed_out = d.ctl("runs", "wait", "later", "--timeout", "200ms", check=False)
    assert timed_out.returncode == 8
    assert timed_out.stdout.startswith("later: scheduled")
    as_json = d.ctl("runs", "wait", "later", "--timeout", "1ms", "--json", check=False)
    assert as_json.returncode == 8
    assert json.loads(as_json.stdout)["done"] is False
    assert d.ctl_json("runs", "wait", "later", "--state", "scheduled")["done"] is True

    for n in range(2):
        submit(d, "--key", f"now-{n}", argv=["true"])
    counted = d.ctl("runs", "wait", "--schedule", "@submit", "--count", "2", "--timeout", "30s")
    assert counted.stdout == "@submit: 2 finished firing(s)\n"
    short = d.ctl(
        "runs", "wait", "--schedule", "@submit", "--count", "3", "--timeout", "100ms", check=False
    )
    assert short.returncode == 8
