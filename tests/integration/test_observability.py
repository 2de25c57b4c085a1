"""What an outside system sees of a real daemon: metrics (HTTP, textfile, ``schedctl metrics``,
all parsed with prometheus_client's own parser), the heartbeat reaching a monitor on 127.0.0.1
and stopping when scheduling stops, and a schedule that stops succeeding being reported overdue."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Daemon, TaskSignal, base_config
from tests.integration.test_systemd_notify import Notifications, start


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Monitor:
    """A healthchecks-style monitor: counts pings and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.pings = 0
        self.arrived = threading.Condition()
        monitor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with monitor.arrived:
                    monitor.pings += 1
                    monitor.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, pings: int, within_s: float = 30) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.pings >= pings, within_s), self.pings

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor()
    yield m
    m.close()


def test_metrics_reach_every_exit_and_an_unsucceeding_schedule_goes_overdue(
    daemon_factory: Any, workdir: Path
) -> None:
    port = free_port()
    overdue = TaskSignal(workdir / "overdue.fifo")
    textfile = workdir / "schedd.prom"
    d: Daemon = daemon_factory(
        base_config(
            f"""
[metrics]
listen = "127.0.0.1:{port}"
textfile = "{textfile}"
textfile_interval = "500ms"

[schedules.tick]
every = "200ms"
command = ["/bin/true"]

[schedules.broken]
every = "300ms"
command = ["/bin/false"]
retry = {{ max_attempts = 1 }}
expect_success_within = "2s"
on_overdue = ["/bin/sh", "-c", "echo $SCHEDD_SCHEDULE > {overdue.path}"]
"""
        )
    )
    d.start()
    assert d.call("wait", schedule="tick", count=3, timeout_ms=30_000)["done"]

    assert overdue.wait(within_s=30).strip() == b"broken"
    overdue.close()
    assert "schedule broken overdue" in d.logs()

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        scraped = samples(r.read().decode())
    assert scraped[("schedd_runs_total", (("outcome", "succeeded"), ("schedule", "tick")))] >= 3
    assert scraped[("schedd_runs_total", (("outcome", "failed"), ("schedule", "broken")))] >= 1
    assert scraped[("schedd_run_lateness_seconds_count", (("schedule", "tick"),))] >= 3
    assert scraped[("schedd_schedule_overdue", (("schedule", "broken"),))] == 1
    assert scraped[("schedd_queue_ready", (("lane", "default"),))] >= 0
    assert scraped[("schedd_schedules", ())] == 2

    via_ctl = samples(d.ctl("metrics").stdout)
    assert via_ctl[("schedd_schedules", ())] == 2
    assert ("schedd_firings_committed_total", ()) in via_ctl
    d.stop()
    assert samples(textfile.read_text())[("schedd_schedules", ())] == 2


def test_heartbeat_pings_while_firing_and_stops_when_the_loop_wedges(
    daemon_factory: Any, workdir: Path, monitor: Monitor
) -> None:
    note = Notifications(workdir / "notify.sock")
    d: Daemon = daemon_factory(
        base_config(
            f"""
[heartbeat]
url = "{monitor.url}"
interval = "1s"

[schedules.tick]
every = "200ms"
command = ["/bin/true"]
"""
        )
    )
    # With a 4 s watchdog the loop counts as stuck after 2 s; the timer's 30th wake-up hangs it.
    start(d, note, WATCHDOG_USEC="4000000", SCHEDD_FAILPOINTS="timer_wake=hang:30")
    note.until("READY=1")
    monitor.wait_for(2)
    while not any(f.startswith("STATUS=unhealthy") for f in note.until("STATUS=", within_s=30)):
        pass
    after_wedge = monitor.pings
    for _ in range(3):  # three more status beats (2 s each): no ping in 6 s, interval 1 s
        assert note.next(within_s=8) is not None
    assert monitor.pings <= after_wedge + 1  # one may have been in flight at detection
    assert "heartbeat" in d.logs()
    assert "secret" not in d.logs(), "the monitor URL's secret path stays out of the log"
    note.close()
