"""``schedctl schedules add --file`` against a real daemon: thousands of schedules in requests of
a thousand (``schedules.add_many``), listed afterwards, one of them firing; a refused request
stops the command and says how far it got."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schedd.cli import exitcodes
from tests.integration.conftest import Daemon, base_config

#: More than two requests' worth, so the command's batching is part of what is tested.
N = 2_500


def daily(i: int) -> str:
    return f'[schedules.d{i:04d}]\ncron = "{i % 60} {i % 24} * * *"\ncommand = ["/bin/true"]\n'


def test_a_file_of_schedules_is_added_listed_and_fires(daemon_factory: Any, workdir: Path) -> None:
    d: Daemon = daemon_factory(base_config(""))
    d.start()
    tick = '[schedules.tick]\nevery = "1s"\njitter = "0s"\nshell = true\ncommand = "echo tick"\n'
    path = workdir / "many.toml"
    path.write_text("".join(daily(i) for i in range(N - 1)) + tick)

    result = d.ctl_json("schedules", "add", "--file", str(path))
    assert result == {"file": str(path), "added": N, "paused": 0, "requests": 3}

    listed = d.ctl_json("schedules", "list")["schedules"]
    assert len(listed) == N
    assert {s["source"] for s in listed} == {"api"}
    by_name = {s["name"]: s for s in listed}
    assert by_name["d0061"]["trigger"] == {"kind": "cron", "cron": "1 13 * * *", "timezone": "UTC"}
    assert by_name["tick"]["trigger"]["every_ms"] == 1000

    d.ctl("runs", "wait", "--schedule", "tick", "--count", "1", "--timeout", "30s")
    [run, *_] = d.ctl_json("runs", "list", "--schedule", "tick")["runs"]
    assert d.ctl("runs", "output", str(run["id"])).stdout == "tick\n"


def test_a_refused_request_stops_the_file_naming_the_entry_and_what_was_added(
    daemon_factory: Any, workdir: Path
) -> None:
    d: Daemon = daemon_factory(base_config(""))
    d.start()
    bad = '[schedules.broken]\nevery = "5"\ncommand = ["/bin/true"]\n'
    path = workdir / "broken.toml"
    path.write_text("".join(daily(i) for i in range(1500)) + bad + daily(9999))

    refused = d.ctl("schedules", "add", "--file", str(path), check=False)
    assert refused.returncode == exitcodes.INVALID_ARGUMENT, refused.stderr
    assert "schedules[500] 'broken': spec.every: invalid duration" in refused.stderr
    assert "stopped at the request of entries 1001-1502" in refused.stderr
    assert (
        "([schedules.d1000] to [schedules.d9999]; schedules[i] is entry 1001+i)" in refused.stderr
    )
    assert "the 1000 of 1502 schedule(s) before it were added" in refused.stderr
    assert d.call("status")["schedules"] == 1000

    again = d.ctl("schedules", "add", "--file", str(path), "--json", check=False)
    assert again.returncode == exitcodes.CONFLICT
    assert "schedule 'd0000' already exists (added through the admin API)" in again.stderr
