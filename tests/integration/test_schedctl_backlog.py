"""``schedctl backlog`` and ``schedctl firings remove``: find a bad batch, then remove it."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from typing import Any

from schedd.admin.client import AdminClient
from tests.integration.conftest import Daemon, base_config

FUTURE = "2099-01-01T00:00:00.000Z"


def enqueue(d: Daemon, keys: list[str], argv: list[str]) -> None:
    """Future firings, so they stay queued; through one connection, since there may be many."""
    with AdminClient(d.socket) as client:
        for key in keys:
            client.call("submit", {"task": {"command": argv}, "key": key, "at": FUTURE})


def test_backlog_groups_the_queue_and_remove_takes_out_only_the_matches(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(base_config(""))
    d.start()
    enqueue(d, [f"bad-{n}" for n in range(5)], ["/bin/echo", "x" * 2000])
    enqueue(d, [f"ok-{n}" for n in range(3)], ["/bin/true"])

    b = d.ctl_json("backlog", "--top", "3")
    assert b["groups"] == [
        {
            "schedule": "@submit",
            "lane": "default",
            "state": "scheduled",
            "count": 8,
            "oldest_due_at": FUTURE,
            "payload_bytes": b["total"]["payload_bytes"],
        }
    ]
    assert b["total"]["count"] == 8
    assert [f["key"].split("-")[0] for f in b["largest"]] == ["bad"] * 3
    sizes = [f["payload_bytes"] for f in b["largest"]]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > 2000
    assert d.ctl_json("backlog", "--schedule", "nope")["groups"] == []
    text = d.ctl("backlog").stdout
    assert "@submit" in text
    assert "total: 8 firing(s)" in text

    remove = ["firings", "remove", "--schedule", "@submit", "--match", "xxxx"]
    dry = d.ctl_json(*remove, "--dry-run")
    assert (dry["matched"], dry["removed"], dry["remaining"]) == (5, 0, 5)
    assert sorted(dry["sample"]) == [f"bad-{n}" for n in range(5)]
    assert d.ctl(
        "firings", "remove", "--schedule", "@submit", "--match", "bad", "--dry-run"
    ).stdout.startswith("5 firing(s) match")
    neither = d.ctl(*remove, check=False)
    assert neither.returncode == 2
    assert "--dry-run" in neither.stderr
    assert "--yes" in neither.stderr
    assert d.ctl_json("backlog")["total"]["count"] == 8, "nothing removed without --yes"

    committed_only = d.ctl_json(*remove, "--state", "committed", "--yes")
    assert committed_only["removed"] == 0
    done = d.ctl_json(*remove, "--yes")
    assert (done["matched"], done["removed"], done["remaining"]) == (5, 5, 0)
    assert d.ctl_json("backlog")["total"]["count"] == 3
    assert d.call("firings.show", key="bad-0")["state"] == "cancelled"
    assert d.call("firings.show", key="ok-0")["state"] == "scheduled"
    assert d.ctl(*remove, "--yes").stdout == "removed 0 firing(s)\n"


def test_a_large_removal_shows_progress_on_a_terminal_and_a_count_at_the_end(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(base_config(""))
    d.start()
    enqueue(d, [f"bulk-{n}" for n in range(1500)], ["/bin/true"])
    cmd = [
        sys.executable,
        "-m",
        "schedd.cli.schedctl",
        "--socket",
        str(d.socket),
        "firings",
        "remove",
        "--schedule",
        "@submit",
        "--yes",
    ]
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    shown = b""
    while True:  # drain the terminal so the bar never blocks on a full pty buffer
        ready, _, _ = select.select([controller], [], [], 60)
        assert ready, "schedctl wrote nothing to its terminal for 60 s"
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == "removed 1500 firing(s)\n"
    assert b"removing" in shown
    assert b"100%" in shown
    assert d.ctl_json("backlog")["total"]["count"] == 0
