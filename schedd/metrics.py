"""Prometheus metrics: what the daemon counts as it works, and what it reads when scraped.

Two kinds of numbers, two mechanisms:

* **Events** (a commit, a run starting or finishing, a retry, a heartbeat) are counted the moment
  they happen, by the daemon's hot paths calling :class:`Metrics` methods. These only bump
  in-memory counters and histograms: no I/O, no await, so they cannot slow dispatch.
* **State** (queue depths, DLQ size, store size, overdue schedules) is read at scrape time, from
  the store and the runtime, by whoever renders (the integrator's ``render`` coroutine), and
  handed over as one :class:`Gauges` snapshot. A snapshot that replaces the previous one whole
  means a lane or schedule that no longer exists simply stops being exported, and no series
  shows a half-updated mix of two moments.

``prometheus_client`` does the exposition (escaping, histogram ``le`` buckets, ``_created``
series) rather than hand-written text: that format has enough corner cases to be worth a small,
pure-Python, well-kept dependency. Everything lives on a private :class:`CollectorRegistry` so
tests (and any embedding) get independent instances, and nothing leaks in from the library's
global registry. ``docs/metrics.md`` lists every metric for operators.

Per-schedule series are capped (``[metrics] max_schedules``): each schedule label costs about 45
series and, in ``prometheus_client``, a few objects per series, all kept until restart. Without
the cap a pulse of 100 000 one-shot schedules held 550 000 lock objects after 20 s and every full
garbage collection walked them (240 ms pauses). The first ``max_schedules`` schedules keep their
own series; later ones share ``schedule="@other"``.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schedd import __version__

#: Scheduling lag worth telling apart: 1 ms (a healthy loop) up to a minute (something is wrong).
LATENESS_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
#: Task run times: 10 ms (a trivial command) up to an hour (a nightly batch job).
DURATION_BUCKETS_S = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    *(120, 300, 600, 1800, 3600),
)
#: Firings per write-ahead commit: one on a quiet host, hundreds of thousands in a catch-up pulse.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 100_000)

SUCCEEDED = "succeeded"
HEARTBEAT_OUTCOMES = ("ok", "failed")
#: The ``schedule`` label shared by the schedules beyond ``[metrics] max_schedules``. Schedule
#: names start with a letter or a digit (``schedd.keys.NAME_RE``), so none can be ``@other``.
OTHER = "@other"
#: Label values starting with this are the daemon's own (``@submit`` for ad-hoc firings, and
#: ``@other``): a fixed few, never schedule names, so they do not count against the cap.
RESERVED_PREFIX = "@"

log = logging.getLogger("schedd.metrics")


@dataclass(frozen=True)
class LaneGauge:
    lane: str
    ready: int
    running: int
    #: None when nothing is ready in the lane (exported as 0: nothing is waiting).
    oldest_ready_age_s: float | None


@dataclass(frozen=True)
class Gauges:
    """Everything read at scrape time; the renderer fills it from the same reads as ``status``."""

    lanes: Sequence[LaneGauge]
    workers_alive: int
    workers_busy: int
    workers_max: int
    dlq_size: int
    dlq_oldest_age_s: float | None
    catchup_backlog: int
    #: Catch-up firings released per second now (0 while no backlog drains).
    catchup_rate: float
    #: Firings held in memory waiting for a slot (at most ``[dispatch] max_ready``).
    ready_held: int
    #: Counted since the daemon started, so it is exported as a counter.
    clock_jumps: int
    store_bytes: int
    wal_bytes: int
    schedules: int
    wheel_handles: int
    #: schedule -> overdue now, only for schedules with ``expect_success_within``.
    overdue: Mapping[str, bool]


M = TypeVar("M", Counter, Gauge, Histogram)


class _Labelled(Generic[M]):
    """A labelled metric whose children are looked up once each: ``labels()`` checks its
    arguments and takes the metric's lock on every call, and every run made four such calls
    (~5 % of a no-op Python run). Children are never removed (their series live until
    restart, and the schedule label is capped), so keeping them costs nothing more."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class Metrics:
    content_type: str = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self, max_schedules: int = 1000) -> None:
        """``max_schedules``: how many distinct schedules get series of their own (0: none)."""
        self._max_schedules = max_schedules
        #: Schedules with their own series: at most ``max_schedules``, kept until restart like
        #: their series. Folded names are not remembered, so one-shot pulses cost no memory.
        self._admitted: set[str] = set()
        self._folding = False
        r = self._registry = CollectorRegistry()
        self._committed = Counter(
            "schedd_firings_committed",
            "Firings committed to the write-ahead log.",
            registry=r,
        )
        self._batch = Histogram(
            "schedd_commit_batch_size",
            "Firings per write-ahead commit transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._lateness = _Labelled(
            Histogram(
                "schedd_run_lateness_seconds",
                "How long after it was due an attempt started.",
                ["schedule"],
                buckets=LATENESS_BUCKETS_S,
                registry=r,
            )
        )
        self._runs = _Labelled(
            Counter(
                "schedd_runs",
                "Attempts finished, by schedule and outcome.",
                ["schedule", "outcome"],
                registry=r,
            )
        )
        self._duration = _Labelled(
            Histogram(
                "schedd_run_duration_seconds",
                "How long finished attempts ran.",
                ["schedule"],
                buckets=DURATION_BUCKETS_S,
                registry=r,
            )
        )
        self._last_success = _Labelled(
            Gauge(
                "schedd_last_success_timestamp_seconds",
                "Unix time at which the schedule's last successful attempt finished.",
                ["schedule"],
                registry=r,
            )
        )
        self._retries = _Labelled(
            Counter(
                "schedd_retries",
                "Retries scheduled after a failed attempt.",
                ["schedule"],
                registry=r,
            )
        )
        self._crashes = _Labelled(
            Counter("schedd_crashes", "Attempts whose process crashed.", ["schedule"], registry=r)
        )
        self._quarantined = _Labelled(
            Counter(
                "schedd_quarantined",
                "Firings quarantined (moved to the dead-letter queue as poison).",
                ["schedule"],
                registry=r,
            )
        )
        self._heartbeats = _Labelled(
            Counter(
                "schedd_heartbeats",
                "Heartbeat pings to the outside monitor, by outcome.",
                ["outcome"],
                registry=r,
            )
        )
        for outcome in HEARTBEAT_OUTCOMES:  # both series exist from the start, so rate() works
            self._heartbeats(outcome)
        self._folded = Counter(
            "schedd_metrics_folded_events",
            f'Events of schedules beyond [metrics] max_schedules, counted as schedule="{OTHER}".',
            registry=r,
        )
        Gauge(
            "schedd_build_info",
            "Always 1; the labels say which schedd and Python are running.",
            ["version", "python"],
            registry=r,
        ).labels(__version__, platform.python_version()).set(1)
        # Prefixed so the node_exporter textfile collector, which exports its own process_*
        # series, does not reject the file for duplicates. Reads /proc: Linux only, else empty.
        ProcessCollector(namespace="schedd", registry=r)
        self._state = _StateCollector()
        r.register(self._state)

    def committed(self, batch_size: int) -> None:
        self._committed.inc(batch_size)
        self._batch.observe(batch_size)

    def run_started(self, schedule: str, lateness_ms: int) -> None:
        # A negative lateness (an attempt started a hair early, or the wall clock stepped) would
        # drag the sum down; it was simply on time.
        self._lateness(self._label(schedule)).observe(max(lateness_ms, 0) / 1000)

    def run_finished(self, schedule: str, outcome: str, duration_ms: int, wall_ms: int) -> None:
        label = self._label(schedule)
        self._runs(label, outcome).inc()
        self._duration(label).observe(max(duration_ms, 0) / 1000)
        if outcome == SUCCEEDED:
            # Under @other: the most recent success of any of the folded schedules.
            self._last_success(label).set(wall_ms / 1000)

    def retried(self, schedule: str) -> None:
        self._retries(self._label(schedule)).inc()

    def crashed(self, schedule: str) -> None:
        self._crashes(self._label(schedule)).inc()

    def quarantined(self, schedule: str) -> None:
        self._quarantined(self._label(schedule)).inc()

    def _label(self, schedule: str) -> str:
        """The ``schedule`` label one event is counted under: the schedule's own name while it
        is (or can still become) one of the first ``max_schedules`` seen, else :data:`OTHER`.
        One set lookup for an admitted schedule, so the hot paths stay O(1)."""
        if schedule in self._admitted or schedule.startswith(RESERVED_PREFIX):
            return schedule
        if len(self._admitted) < self._max_schedules:
            self._admitted.add(schedule)
            return schedule
        if not self._folding:
            self._folding = True
            log.warning(
                '[metrics] max_schedules = %d reached: schedule "%s" and every later new one are '
                'counted under schedule="%s" (schedd_metrics_folded_events_total counts them)',
                self._max_schedules,
                schedule,
                OTHER,
            )
        self._folded.inc()
        return OTHER

    def heartbeat_sent(self, ok: bool) -> None:
        self._heartbeats(HEARTBEAT_OUTCOMES[0] if ok else HEARTBEAT_OUTCOMES[1]).inc()

    def set_gauges(self, g: Gauges) -> None:
        self._state.gauges = g

    def render(self) -> bytes:
        return generate_latest(self._registry)


class _StateCollector(Collector):
    """Turns the latest :class:`Gauges` snapshot into metric families at each collection.

    Before the first snapshot it exports nothing: a missing series is honest, a 0 would claim
    an empty queue nobody looked at.
    """

    def __init__(self) -> None:
        self.gauges: Gauges | None = None

    def collect(self) -> Iterable[Metric]:
        g = self.gauges
        if g is None:
            return []
        ready = _gauge("schedd_queue_ready", "Firings ready to run, waiting for a slot.", "lane")
        running = _gauge("schedd_queue_running", "Attempts running now.", "lane")
        oldest = _gauge(
            "schedd_queue_oldest_ready_age_seconds",
            "How long the oldest ready firing has been due (0 when none is ready).",
            "lane",
        )
        for lane in g.lanes:
            ready.add_metric([lane.lane], lane.ready)
            running.add_metric([lane.lane], lane.running)
            oldest.add_metric([lane.lane], lane.oldest_ready_age_s or 0.0)
        overdue = _gauge(
            "schedd_schedule_overdue",
            "1 while no run succeeded within the schedule's expect_success_within.",
            "schedule",
        )
        for schedule, late in sorted(g.overdue.items()):
            overdue.add_metric([schedule], 1 if late else 0)
        return [
            ready,
            running,
            oldest,
            overdue,
            _value(
                "schedd_workers_alive", "Worker processes alive (Python pool).", g.workers_alive
            ),
            _value("schedd_workers_busy", "Task slots in use.", g.workers_busy),
            _value("schedd_workers_max", "Task slots in all ([workers] max).", g.workers_max),
            _value("schedd_dlq_size", "Firings in the dead-letter queue.", g.dlq_size),
            _value(
                "schedd_dlq_oldest_age_seconds",
                "Age of the oldest dead-letter entry (0 when the queue is empty).",
                g.dlq_oldest_age_s or 0.0,
            ),
            _value(
                "schedd_catchup_backlog",
                "Catch-up firings (missed occurrences) committed and not yet released.",
                g.catchup_backlog,
            ),
            _value(
                "schedd_catchup_rate",
                "Catch-up firings released per second now (0 while no backlog drains).",
                g.catchup_rate,
            ),
            _value(
                "schedd_ready_held",
                "Firings held in memory waiting for a slot ([dispatch] max_ready bounds it).",
                g.ready_held,
            ),
            CounterMetricFamily(
                "schedd_clock_jumps",
                "Wall-clock steps detected since the daemon started.",
                value=g.clock_jumps,
            ),
            _value("schedd_store_bytes", "Size of the SQLite database file.", g.store_bytes),
            _value("schedd_store_wal_bytes", "Size of the SQLite write-ahead log.", g.wal_bytes),
            _value("schedd_schedules", "Schedules in the store.", g.schedules),
            _value(
                "schedd_wheel_handles", "Occurrences armed on the timing wheel.", g.wheel_handles
            ),
        ]


def _gauge(name: str, documentation: str, label: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=[label])


def _value(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
