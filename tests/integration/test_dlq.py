"""The dead-letter queue end to end: a real poison task, the real daemon, ``schedctl dlq``.

The poison task kills itself with SIGKILL, which schedd did not cause and no limit explains, so
each run is a crash; the second crash quarantines the firing (DESIGN §5). The one-shot ``at``
is in the past, so it fires at start-up, and its backoff is a few milliseconds, so the retry
between the two crashes is immediate. Every wait is the daemon's ``wait`` operation.
"""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Daemon, base_config

AT = "2026-01-01T00:00:00.000Z"
POISON_KEY = f"poison@{AT}"
FINE_KEY = f"fine@{AT}"
SCHEDULES = f"""
[schedules.poison]
at = "{AT}"
command = ["sh", "-c", "echo about to die; kill -9 $$"]
retry = {{ base = "1ms", max = "10ms" }}

[schedules.fine]
at = "{AT}"
command = ["true"]
"""


def quarantined(d: Daemon) -> dict[str, Any]:
    """Wait for the poison firing to be quarantined; return it."""
    result = d.call("wait", key=POISON_KEY, states=["quarantined"], timeout_ms=30_000)
    assert result["done"], d.logs()
    firing: dict[str, Any] = result["firing"]
    return firing


def test_a_poison_task_is_quarantined_after_two_crashes_then_retried_and_purged(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(base_config(SCHEDULES))
    d.start()
    first = quarantined(d)
    assert (first["attempt"], first["crashes"]) == (2, 2)
    assert first["reason"].startswith("quarantined after 2 crashes")

    [listed] = d.ctl_json("dlq", "list")["firings"]
    assert (listed["id"], listed["key"]) == (first["id"], POISON_KEY)
    assert listed["state"] == "quarantined"
    assert POISON_KEY in d.ctl("dlq", "list").stdout
    fid = str(first["id"])

    shown = d.ctl_json("dlq", "show", POISON_KEY)
    assert shown["task"]["command"] == ["sh", "-c", "echo about to die; kill -9 $$"]
    assert [(a["attempt"], a["state"], a["exit_code"], a["signal"]) for a in shown["attempts"]] == [
        (1, "crash", None, 9),
        (2, "crash", None, 9),
    ]
    assert all("about to die" in a["output"] for a in shown["attempts"])
    human = d.ctl("dlq", "show", fid).stdout
    assert "signal 9" in human
    assert "about to die" in human

    status = d.ctl_json("status")["dlq"]
    assert status["size"] == 1
    assert status["oldest_at"] == first["updated_at"]
    assert "dlq" in d.ctl("status").stdout

    retried = d.ctl("dlq", "retry", POISON_KEY).stdout
    assert f"{POISON_KEY}: re-queued as attempt 3" in retried
    again = quarantined(d)
    assert (again["id"], again["attempt"], again["crashes"]) == (first["id"], 3, 3)
    runs = d.ctl_json("runs", "list", "--schedule", "poison")["runs"]
    assert [(r["attempt"], r["signal"]) for r in runs] == [(3, 9), (2, 9), (1, 9)]

    assert d.ctl_json("dlq", "purge", fid) == {"purged": 1}
    assert d.ctl_json("dlq", "list")["firings"] == []
    assert d.ctl("dlq", "show", fid, check=False).returncode == 3
    assert d.ctl_json("runs", "list", "--schedule", "poison")["runs"] == []
    assert d.ctl_json("status")["dlq"] == {"size": 0, "oldest_at": None, "oldest_age_ms": None}


def test_dlq_commands_refuse_with_the_documented_exit_codes(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(base_config(SCHEDULES))
    d.start()
    poisoned = quarantined(d)
    assert d.call("wait", key=FINE_KEY, timeout_ms=30_000)["firing"]["state"] == "succeeded"

    usage = {
        ("dlq", "purge"): "give either a firing ID_OR_KEY or --all",
        ("dlq", "purge", POISON_KEY, "--all"): "give either a firing ID_OR_KEY or --all",
        ("dlq", "purge", POISON_KEY, "--older-than", "7d"): "--older-than works only with --all",
        ("dlq", "purge", "--older-than", "7d"): "--older-than works only with --all",
        ("dlq", "purge", "--all", "--older-than", "7"): "--older-than: invalid duration",
    }
    for args, message in usage.items():
        r = d.ctl(*args, check=False)
        assert (r.returncode, message in r.stderr) == (2, True), (args, r.stderr)

    missing = d.ctl("dlq", "retry", "999999", check=False)
    assert (missing.returncode, "firing id 999999 does not exist" in missing.stderr) == (3, True)
    not_dead = d.ctl("dlq", "retry", FINE_KEY, check=False)
    assert not_dead.returncode == 5
    assert "is succeeded, not in the dead-letter queue" in not_dead.stderr

    assert d.ctl_json("dlq", "purge", "--all", "--older-than", "7d") == {"purged": 0}
    [still] = d.ctl_json("dlq", "list")["firings"]
    assert still["id"] == poisoned["id"], "a fresh entry is younger than 7 days"
    assert "purged 1 firing(s)" in d.ctl("dlq", "purge", "--all").stdout
    assert d.ctl_json("dlq", "list")["firings"] == []
