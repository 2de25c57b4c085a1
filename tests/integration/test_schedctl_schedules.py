"""``schedctl schedules`` against a real daemon: add, remove, pause, resume, trigger, backfill."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import Daemon, base_config

CONFIGURED = """
[schedules.nightly]
cron = "0 3 * * *"
command = ["true"]

[schedules.hourly]
cron = "0 * * * *"
shell = true
command = 'echo "ran $SCHEDD_SCHEDULE"'
"""


def with_argv(d: Daemon, *args: str, argv: list[str]) -> Any:
    """``ctl_json`` for a command that ends in ``-- ARGV``: ``--json`` must come before ``--``."""
    return json.loads(d.ctl(*args, "--json", "--", *argv).stdout)


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_an_added_schedule_fires_persists_and_can_be_removed(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(CONFIGURED))
    d.start()
    add = ["schedules", "add", "hello", "--every", "1s", "--jitter", "0s", "--timeout", "10s"]
    added = with_argv(d, *add, "--env", "WHO=world", argv=["/bin/sh", "-c", 'echo "hi $WHO"'])
    assert added["source"] == "api"
    assert (added["trigger"]["kind"], added["trigger"]["every_ms"]) == ("every", 1000)
    assert added["task"]["command"] == ["/bin/sh", "-c", 'echo "hi $WHO"']
    assert added["task"]["env"] == {"WHO": "world"}
    assert added["policies"]["timeout_ms"] == 10_000
    assert added["paused"] is False

    d.ctl("runs", "wait", "--schedule", "hello", "--count", "1", "--timeout", "30s")
    [run, *_] = d.ctl_json("runs", "list", "--schedule", "hello")["runs"]
    assert d.ctl("runs", "output", str(run["id"])).stdout == "hi world\n"

    sources = {s["name"]: s["source"] for s in d.ctl_json("schedules", "list")["schedules"]}
    assert sources == {"hello": "api", "hourly": "config", "nightly": "config"}
    listing = d.ctl("schedules", "list").stdout
    assert "every 1s" in listing
    assert "api" in listing

    taken = d.ctl(*add, "--", "true", check=False)
    assert taken.returncode == 5, taken.stderr
    assert "hello" in taken.stderr
    bad = d.ctl("schedules", "add", "bad", "--every", "5", "--", "true", check=False)
    assert bad.returncode == 2
    assert "spec.every" in bad.stderr
    bad_zone = d.ctl(
        "schedules",
        "add",
        "bad",
        "--cron",
        "* * * * *",
        "--tz",
        "Mars/Base",
        "--",
        "true",
        check=False,
    )
    assert bad_zone.returncode == 2
    assert "spec.timezone" in bad_zone.stderr

    # A restart keeps what was added through the API.
    assert d.stop() == 0
    d.start()
    assert d.ctl_json("schedules", "show", "hello")["source"] == "api"

    from_config = d.ctl("schedules", "remove", "nightly", check=False)
    assert from_config.returncode == 5
    assert "config file" in from_config.stderr
    assert d.ctl_json("schedules", "remove", "hello") == {"removed": "hello"}
    assert d.ctl("schedules", "show", "hello", check=False).returncode == 3
    assert d.ctl("schedules", "remove", "hello", check=False).returncode == 3
    # Its runs are kept as history.
    assert d.ctl_json("runs", "list", "--schedule", "hello")["runs"]


def test_a_python_schedule_and_a_paused_one(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(""))
    d.start()
    added = d.ctl_json(
        "schedules",
        "add",
        "py",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--paused",
        "--retries",
        "2",
        "--python",
        "tests.pytasks:echo",
        "--args",
        '[1, "two"]',
        "--kwargs",
        '{"k": [3]}',
    )
    assert added["task"] == {
        "python": "tests.pytasks:echo",
        "args": [1, "two"],
        "kwargs": {"k": [3]},
    }
    assert added["trigger"]["cron"] == "30 2 * * *"
    assert added["timezone"] == "Europe/Berlin"
    assert added["paused"] is True
    assert added["policies"]["retry"]["max_attempts"] == 3
    shown = d.ctl("schedules", "show", "py").stdout
    assert "tests.pytasks:echo" in shown
    assert '[1, "two"]' in shown


def test_pause_resume_trigger_and_backfill(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(CONFIGURED))
    d.start()
    paused = d.ctl_json("schedules", "pause", "hourly")
    assert paused["paused"] is True
    assert d.ctl_json("schedules", "pause", "hourly")["paused"] is True, "idempotent"
    assert "hourly: paused" in d.ctl("schedules", "pause", "hourly").stdout
    assert d.ctl_json("schedules", "show", "hourly")["paused"] is True

    # A paused schedule still runs when triggered, under a key that says it was by hand.
    triggered = d.ctl_json("schedules", "trigger", "hourly")
    assert triggered["created"] is True
    key = triggered["firing"]["key"]
    assert key.startswith("hourly@manual:")
    waited = d.ctl_json("runs", "wait", key, "--timeout", "30s")
    assert waited["firing"]["state"] == "succeeded"
    [run] = d.ctl_json("runs", "list", "--key", key)["runs"]
    assert d.ctl("runs", "output", str(run["id"])).stdout == "ran hourly\n"

    mine = d.ctl("schedules", "trigger", "hourly", "--key", "hourly-by-hand").stdout
    assert mine.startswith("hourly-by-hand: created")
    again = d.ctl_json("schedules", "trigger", "hourly", "--key", "hourly-by-hand")
    assert again["created"] is False
    assert again["firing"]["key"] == "hourly-by-hand"

    resumed = d.ctl_json("schedules", "resume", "hourly")
    assert resumed["paused"] is False
    assert resumed["next_fire_at"] is not None
    assert "hourly: active" in d.ctl("schedules", "resume", "hourly").stdout

    # Backfill the two last full hours: keys as if they had fired on time.
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first, last = hour - timedelta(hours=2), hour - timedelta(hours=1)
    span = ["--from", rfc3339(first), "--to", rfc3339(last)]
    dry = d.ctl_json("schedules", "backfill", "hourly", *span, "--dry-run")
    assert dry == {
        "occurrences": 2,
        "created": 0,
        "existing": 0,
        "first_key": f"hourly@{rfc3339(first)}",
        "last_key": f"hourly@{rfc3339(last)}",
    }
    assert (
        "2 would be created" in d.ctl("schedules", "backfill", "hourly", *span, "--dry-run").stdout
    )
    done = d.ctl_json("schedules", "backfill", "hourly", *span)
    assert (done["created"], done["existing"]) == (2, 0)
    assert d.ctl_json("runs", "wait", f"hourly@{rfc3339(last)}")["firing"]["state"] == "succeeded"
    repeat = d.ctl("schedules", "backfill", "hourly", *span).stdout
    assert "0 created, 2 already existed" in repeat

    future = rfc3339(hour + timedelta(hours=2))
    ahead = d.ctl(
        "schedules", "backfill", "hourly", "--from", rfc3339(hour), "--to", future, check=False
    )
    assert ahead.returncode == 2
    assert "future" in ahead.stderr

    for args in (["pause", "nope"], ["resume", "nope"], ["trigger", "nope"], ["show", "nope"]):
        missing = d.ctl("schedules", *args, check=False)
        assert missing.returncode == 3, (args, missing.stderr)
        assert "nope" in missing.stderr
