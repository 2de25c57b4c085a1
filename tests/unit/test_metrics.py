"""Metrics as a scraper sees them: each test renders, parses with prometheus_client's own parser
and checks families, labels, values and histogram buckets."""

from __future__ import annotations

import logging
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from schedd import __version__
from schedd.metrics import OTHER, Gauges, LaneGauge, Metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

GAUGES = Gauges(
    lanes=[LaneGauge("default", 3, 2, 12.5), LaneGauge("reports", 0, 1, None)],
    workers_alive=2,
    workers_busy=3,
    workers_max=4,
    dlq_size=5,
    dlq_oldest_age_s=3600.0,
    catchup_backlog=7,
    catchup_rate=2.5,
    ready_held=13,
    clock_jumps=2,
    store_bytes=1 << 20,
    wal_bytes=4096,
    schedules=9,
    wheel_handles=11,
    overdue={"nightly": True, "hourly": False},
)


def scrape(m: Metrics) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def value(m: Metrics, sample: str, **labels: str) -> float | None:
    """The value of one sample (by its full name and exact labels), None if it is not exported."""
    for family in scrape(m).values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return s.value
    return None


def buckets(m: Metrics, histogram: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts of one histogram series, by upper bound."""
    return {
        float(s.labels["le"]): s.value
        for s in scrape(m)[histogram].samples
        if s.name == f"{histogram}_bucket" and {**s.labels, "le": ""} == {**labels, "le": ""}
    }


def test_commits_count_firings_and_record_batch_sizes() -> None:
    m = Metrics()
    for size in (1, 3, 3000):
        m.committed(size)
    assert value(m, "schedd_firings_committed_total") == 3004
    assert scrape(m)["schedd_commit_batch_size"].type == "histogram"
    b = buckets(m, "schedd_commit_batch_size")
    assert (b[1], b[2], b[5], b[2500], b[5000], b[math.inf]) == (1, 1, 2, 2, 3, 3)
    assert value(m, "schedd_commit_batch_size_sum") == 3004


def test_lateness_is_in_seconds_per_schedule_and_never_negative() -> None:
    m = Metrics()
    for lateness_ms in (0, -5, 3, 2000, 120_000):
        m.run_started("nightly", lateness_ms)
    m.run_started("@submit", 40)
    b = buckets(m, "schedd_run_lateness_seconds", schedule="nightly")
    assert min(b) == 0.001
    assert max(k for k in b if k != math.inf) == 60
    assert (b[0.001], b[0.005], b[2.5], b[60], b[math.inf]) == (2, 3, 4, 4, 5)
    assert value(m, "schedd_run_lateness_seconds_sum", schedule="nightly") == pytest.approx(122.003)
    assert value(m, "schedd_run_lateness_seconds_count", schedule="@submit") == 1


def test_finished_runs_count_by_outcome_and_time_duration() -> None:
    m = Metrics()
    m.run_finished("nightly", "failed", 20, 1_767_225_600_000)
    m.run_finished("nightly", "succeeded", 1500, 1_767_225_700_000)
    m.run_finished("nightly", "succeeded", 7_200_000, 1_767_225_800_000)
    assert value(m, "schedd_runs_total", schedule="nightly", outcome="failed") == 1
    assert value(m, "schedd_runs_total", schedule="nightly", outcome="succeeded") == 2
    b = buckets(m, "schedd_run_duration_seconds", schedule="nightly")
    assert min(b) == 0.01
    assert max(k for k in b if k != math.inf) == 3600
    assert (b[0.01], b[0.025], b[2.5], b[3600], b[math.inf]) == (0, 1, 2, 2, 3)
    assert value(m, "schedd_run_duration_seconds_sum", schedule="nightly") == pytest.approx(7201.52)


def test_last_success_timestamp_moves_only_on_success() -> None:
    m = Metrics()
    m.run_finished("nightly", "failed", 10, 1_767_225_000_000)
    assert value(m, "schedd_last_success_timestamp_seconds", schedule="nightly") is None
    m.run_finished("nightly", "succeeded", 10, 1_767_225_600_500)
    m.run_finished("nightly", "timeout", 10, 1_767_225_900_000)
    assert value(m, "schedd_last_success_timestamp_seconds", schedule="nightly") == 1_767_225_600.5


def test_retries_crashes_and_quarantines_count_per_schedule() -> None:
    m = Metrics()
    m.retried("nightly")
    m.retried("nightly")
    m.crashed("hourly")
    m.quarantined("hourly")
    assert value(m, "schedd_retries_total", schedule="nightly") == 2
    assert value(m, "schedd_retries_total", schedule="hourly") is None
    assert value(m, "schedd_crashes_total", schedule="hourly") == 1
    assert value(m, "schedd_quarantined_total", schedule="hourly") == 1


def schedules_with_series(m: Metrics) -> set[str]:
    return {s.labels["schedule"] for s in scrape(m)["schedd_runs"].samples}


def test_schedules_beyond_the_cap_share_the_other_label(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics(max_schedules=2)
    with caplog.at_level(logging.WARNING, logger="schedd.metrics"):
        for schedule in ("nightly", "hourly", "pulse-1", "pulse-2", "nightly"):
            m.run_started(schedule, 10)
            m.run_finished(schedule, "failed", 20, 1_767_225_600_000)
            m.retried(schedule)
    assert schedules_with_series(m) == {"nightly", "hourly", OTHER}
    assert value(m, "schedd_runs_total", schedule="nightly", outcome="failed") == 2
    assert value(m, "schedd_runs_total", schedule=OTHER, outcome="failed") == 2
    assert value(m, "schedd_run_lateness_seconds_count", schedule=OTHER) == 2
    assert value(m, "schedd_retries_total", schedule=OTHER) == 2
    assert value(m, "schedd_retries_total", schedule="pulse-1") is None
    assert value(m, "schedd_metrics_folded_events_total") == 6
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert "[metrics] max_schedules = 2 reached" in warning.getMessage()
    assert '"pulse-1"' in warning.getMessage()


def test_other_keeps_the_latest_success_of_the_folded_schedules() -> None:
    m = Metrics(max_schedules=1)
    m.run_finished("nightly", "succeeded", 10, 1_767_225_000_000)
    m.run_finished("pulse-1", "succeeded", 10, 1_767_225_600_000)
    m.run_finished("pulse-2", "failed", 10, 1_767_225_700_000)
    m.run_finished("pulse-3", "succeeded", 10, 1_767_225_900_000)
    assert value(m, "schedd_last_success_timestamp_seconds", schedule="nightly") == 1_767_225_000
    assert value(m, "schedd_last_success_timestamp_seconds", schedule=OTHER) == 1_767_225_900


def test_zero_max_schedules_folds_every_schedule_but_not_adhoc_firings() -> None:
    m = Metrics(max_schedules=0)
    for schedule in ("nightly", "hourly", "@submit"):
        m.run_finished(schedule, "succeeded", 10, 1_767_225_600_000)
    m.crashed("nightly")
    m.quarantined("hourly")
    assert schedules_with_series(m) == {OTHER, "@submit"}
    assert value(m, "schedd_runs_total", schedule=OTHER, outcome="succeeded") == 2
    assert value(m, "schedd_crashes_total", schedule=OTHER) == 1
    assert value(m, "schedd_quarantined_total", schedule=OTHER) == 1
    assert value(m, "schedd_metrics_folded_events_total") == 4


def test_nothing_is_folded_below_the_cap() -> None:
    m = Metrics(max_schedules=3)
    for schedule in ("a", "b", "c", "a"):
        m.run_started(schedule, 1)
    assert value(m, "schedd_metrics_folded_events_total") == 0
    assert {s.labels["schedule"] for s in scrape(m)["schedd_run_lateness_seconds"].samples} == {
        "a",
        "b",
        "c",
    }


def test_heartbeat_outcomes_exist_from_the_start() -> None:
    m = Metrics()
    assert value(m, "schedd_heartbeats_total", outcome="ok") == 0
    assert value(m, "schedd_heartbeats_total", outcome="failed") == 0
    m.heartbeat_sent(True)
    m.heartbeat_sent(False)
    m.heartbeat_sent(False)
    assert value(m, "schedd_heartbeats_total", outcome="ok") == 1
    assert value(m, "schedd_heartbeats_total", outcome="failed") == 2


def test_state_is_absent_until_the_first_snapshot() -> None:
    m = Metrics()
    assert "schedd_queue_ready" not in scrape(m)
    assert "schedd_dlq_size" not in scrape(m)
    m.set_gauges(GAUGES)
    assert value(m, "schedd_queue_ready", lane="default") == 3
    assert value(m, "schedd_queue_running", lane="reports") == 1
    assert value(m, "schedd_queue_oldest_ready_age_seconds", lane="default") == 12.5
    assert value(m, "schedd_queue_oldest_ready_age_seconds", lane="reports") == 0
    scalars = {
        "schedd_workers_alive": 2,
        "schedd_workers_busy": 3,
        "schedd_workers_max": 4,
        "schedd_dlq_size": 5,
        "schedd_dlq_oldest_age_seconds": 3600,
        "schedd_catchup_backlog": 7,
        "schedd_catchup_rate": 2.5,
        "schedd_ready_held": 13,
        "schedd_clock_jumps_total": 2,
        "schedd_store_bytes": 1 << 20,
        "schedd_store_wal_bytes": 4096,
        "schedd_schedules": 9,
        "schedd_wheel_handles": 11,
    }
    assert {name: value(m, name) for name in scalars} == scalars
    assert scrape(m)["schedd_clock_jumps"].type == "counter"
    assert value(m, "schedd_schedule_overdue", schedule="nightly") == 1
    assert value(m, "schedd_schedule_overdue", schedule="hourly") == 0


def test_a_new_snapshot_replaces_the_old_one_whole() -> None:
    m = Metrics()
    m.set_gauges(GAUGES)
    m.set_gauges(
        replace(
            GAUGES,
            lanes=[LaneGauge("default", 0, 0, None)],
            dlq_size=0,
            dlq_oldest_age_s=None,
            overdue={"hourly": True},
        )
    )
    assert value(m, "schedd_queue_ready", lane="reports") is None
    assert value(m, "schedd_queue_ready", lane="default") == 0
    assert value(m, "schedd_dlq_oldest_age_seconds") == 0
    assert value(m, "schedd_schedule_overdue", schedule="nightly") is None
    assert value(m, "schedd_schedule_overdue", schedule="hourly") == 1


def test_build_info_names_the_version() -> None:
    m = Metrics()
    [sample] = scrape(m)["schedd_build_info"].samples
    assert sample.labels["version"] == __version__
    assert sample.labels["python"] == ".".join(map(str, sys.version_info[:3]))
    assert sample.value == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process metrics read /proc")
def test_process_metrics_are_prefixed() -> None:
    families = scrape(Metrics())
    assert families["schedd_process_start_time_seconds"].samples[0].value > 0
    assert not any(name.startswith("process_") for name in families)


def test_instances_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.committed(5)
    assert value(b, "schedd_firings_committed_total") == 0
    assert not any(f.name.startswith("schedd_") for f in REGISTRY.collect())


def test_content_type_is_the_classic_text_format() -> None:
    assert Metrics.content_type.startswith("text/plain; version=0.0.4")


def test_every_exported_metric_is_documented() -> None:
    m = Metrics()
    m.committed(1)
    m.run_started("nightly", 1)
    m.run_finished("nightly", "succeeded", 1, 1)
    m.retried("nightly")
    m.crashed("nightly")
    m.quarantined("nightly")
    m.set_gauges(GAUGES)
    documented = set(re.findall(r"`(schedd_\w+)", DOCS.read_text()))
    exported = {
        s.name
        for f in scrape(m).values()
        for s in f.samples
        if not s.name.endswith(("_bucket", "_sum", "_count", "_created"))
    }
    exported |= {f.name for f in scrape(m).values() if f.type == "histogram"}
    assert exported - documented == set()
