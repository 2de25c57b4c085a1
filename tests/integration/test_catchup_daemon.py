"""The catch-up drain and the ready-queue bound in the real daemon, seen through the socket.

An "outage" without waiting for one: one-shot schedules whose instant is an hour past are
missed occurrences the moment the daemon starts, so under ``fire_once`` each becomes one
catch-up firing, exactly as after an hour of downtime.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from tests.integration.conftest import Daemon, base_config

N = 100
RATE = 20


def config(past: str) -> str:
    schedules = "".join(
        f'[schedules.c{i:03d}]\nat = "{past}"\ncommand = ["true"]\n' for i in range(N)
    )
    # max_rate = rate pins the rate: the figures below are exact, not a moving AIMD target.
    return base_config(
        f"[dispatch]\nmax_ready = 20\n\n[catchup]\nrate = {RATE}\nmax_rate = {RATE}\n\n{schedules}"
    )


def test_an_outages_backlog_drains_at_the_configured_rate_and_status_shows_it(
    daemon_factory: Any,
) -> None:
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat(timespec="seconds")
    d: Daemon = daemon_factory(config(past))
    d.start()
    assert d.call("wait", schedule="c000", count=1, timeout_ms=60_000)["done"]

    s = d.ctl_json("status")
    catchup = s["catchup"]
    assert catchup["draining"], s
    assert 0 < catchup["backlog"] <= N - RATE, "the first second's burst went out, not more"
    assert catchup["rate_per_s"] == RATE
    assert catchup["eta_ms"] == catchup["backlog"] * 1000 // RATE
    assert s["queue"]["max_ready"] == 20
    assert f"at {RATE}/s" in d.ctl("status").stdout
    metrics = d.ctl("metrics").stdout
    assert f"schedd_catchup_rate {float(RATE)}" in metrics

    for i in range(N):
        assert d.call("wait", schedule=f"c{i:03d}", count=1, timeout_ms=60_000)["done"]
    s = d.ctl_json("status")
    assert s["catchup"]["backlog"] == 0
    assert s["queue"]["peak"] <= 20, "never more than [dispatch] max_ready held"

    db = sqlite3.connect(f"file:{d.root / 'state' / 'schedd.db'}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT f.catchup, f.state, r.started_ms FROM firings f JOIN runs r ON r.firing_id = f.id"
    ).fetchall()
    db.close()
    assert len(rows) == N
    assert {(c, st) for c, st, _ in rows} == {(1, "succeeded")}
    starts = sorted(r[2] for r in rows)
    # After the one-second burst the rest goes out at RATE per second: never faster.
    floor_ms = (N - RATE) * 1000 // RATE
    assert starts[-1] - starts[0] >= floor_ms - 100, (starts[0], starts[-1])
