"""Which raw figures make which row of the table, with the issue's targets beside them.

Kept apart from running the scenarios (``bench.__main__``) so that a table can be rebuilt from
a saved ``--json`` file and the targets read in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.common import median
from bench.report import Row

Col = Callable[[str, str], list[float]]
MB = 1e6


def rows(result: dict[str, Any]) -> list[Row]:
    raw = result["raw"]

    def col(key: str, field: str) -> list[float]:
        """Every value of ``field`` (dotted) over the repetitions of ``key``; lists flatten."""
        out: list[float] = []
        for r in raw.get(key, []):
            v: Any = r
            for part in field.split("."):
                v = v[part]
            out.extend(v if isinstance(v, list) else [v])
        return [float(x) for x in out]

    return [
        *_pulse(result["sizes"], col),
        *_steady(result, col),
        *_scale(result["sizes"], col),
        *_payload(result["sizes"], col),
        *_execution(result["sizes"], col),
        *_lanes(result, col),
    ]


def _sum(a: list[float], b: list[float]) -> list[float]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _diff(a: list[float], b: list[float], unit: float = 1.0) -> list[float]:
    return [(x - y) / unit for x, y in zip(a, b, strict=True)]


def _mb(values: list[float]) -> list[float]:
    return [v / MB for v in values]


def _pulse(n: dict[str, int], col: Col) -> list[Row]:
    """Scenario 1 against APScheduler and the floors, with 6 (status during it)."""
    p = n["pulse"]
    return [
        Row(
            f"1 pulse {p:,}: commit rate",
            "firings/s",
            col("schedd_pulse", "rate"),
            col("aps_memory", "rate"),
            col("floor_sqlite", "rate"),
            ">=3x peer, >=0.5 floor",
            lambda s, pe, f: s >= 3 * (pe or 0) and s >= 0.5 * (f or 0),
        ),
        Row("1 pulse: time to all committed", "s", col("schedd_pulse", "commit_s")),
        *(
            Row(
                f"1 pulse: commit lateness {q}",
                "ms",
                col("schedd_pulse", f"commit_late.{q}"),
                col("aps_memory", q),
                col("floor_timer", q),
            )
            for q in ("p50", "p99", "max")
        ),
        Row(
            "1 pulse: early + lost",
            "firings",
            _sum(col("schedd_pulse", "commit_late.early"), col("schedd_pulse", "lost")),
            col("aps_memory", "early"),
            target="0",
            met=lambda s, pe, f: s == 0,
        ),
        Row(
            "1 pulse vs APS SQLite; floor=call_at",
            "firings/s",
            col("schedd_pulse", "rate"),
            col("aps_sqlite", "rate"),
            col("floor_timer", "rate"),
        ),
        Row(
            "  floor=the same rows into schedd's firings table",
            "firings/s",
            col("schedd_pulse", "rate"),
            floor=col("floor_schedd_rows", "rate"),
        ),
        Row(
            "  floor=DESIGN's duties of a dispatch, the leanest Python",
            "firings/s",
            col("schedd_pulse", "rate"),
            floor=col("floor_dispatch_duties", "rate"),
        ),
        Row(
            "6 status latency p99 during pulse",
            "ms",
            col("schedd_pulse", "status_p99_ms"),
            target="<=100",
            met=lambda s, pe, f: s <= 100,
        ),
    ]


def _steady(result: dict[str, Any], col: Col) -> list[Row]:
    """Scenario 3: no peer in the issue, and absolute targets. The floor is the same firings
    group-committed by a bare loop and writer (``floor_steady``), watched alike."""
    n, secs = result["sizes"]["steady"], result["steady_s"]

    def late(label: str, q: str, **target: Any) -> Row:
        """Commit lateness quantile ``q``, schedd's beside the floor's."""
        field = f"commit_late.{q}"
        return Row(
            label, "ms", col("schedd_steady", field), floor=col("floor_steady", field), **target
        )

    def missed(key: str) -> list[float]:
        return _sum(col(key, "commit_late.early"), col(key, "unobserved"))

    return [
        late(f"3 steady {n:,} x every 1s, {secs:.0f}s: commit late p50", "p50"),
        late("3 steady: commit lateness p99", "p99", target="<=10", met=lambda s, pe, f: s <= 10),
        Row(
            "  floor=one bare COMMIT's p99 on this disk",
            "ms",
            col("schedd_steady", "commit_late.p99"),
            floor=col("floor_commits", "p99"),
        ),
        late("3 steady: commit lateness max", "max", target="<=50", met=lambda s, pe, f: s <= 50),
        Row(
            "3 steady: early + unobserved",
            "firings",
            missed("schedd_steady"),
            floor=missed("floor_steady"),
            target="0",
            met=lambda s, pe, f: s == 0,
        ),
        Row(
            "3 steady: daemon CPU",
            "% of a core",
            [100 * x for x in col("schedd_steady", "cpu_share")],
        ),
        Row("3 steady: daemon RSS at the end", "MB", _mb(col("schedd_steady", "rss_end"))),
    ]


def _scale(n: dict[str, int], col: Col) -> list[Row]:
    """Scenario 4: adding N schedules through the admin API, then the store's RSS and start-up."""
    return [
        Row(
            f"4 add {n['store']:,} cron+interval (admin API)",
            "schedules/s",
            col("schedd_store", "rate"),
            col("aps_memory", "add_rate"),
            target=">=10x peer",
            met=lambda s, pe, f: s >= 10 * (pe or 0),
        ),
        *_add_floor(col),
        Row(
            "4 memory per schedule",
            "bytes",
            col("schedd_store", "bytes_per_schedule"),
            col("aps_memory", "bytes_per_job"),
        ),
        Row(
            "4 store: start-up to READY",
            "s",
            col("schedd_store", "ready_s"),
            target="<=10",
            met=lambda s, pe, f: s <= 10,
        ),
        Row(
            "4 store: RSS once serving",
            "MB",
            _mb(col("schedd_store", "rss")),
            target="<=250",
            met=lambda s, pe, f: s <= 250,
        ),
        Row("4 store: peak RSS of start-up", "MB", _mb(col("schedd_store", "peak_rss"))),
    ]


def _add_floor(col: Col) -> list[Row]:
    """The add rate's floor: the same requests decoded and inserted with nothing of schedd's.
    Its own multiple of the peer is in the label, since the target (10x the peer) is only
    reachable if the floor itself is above it."""
    floor, peer = col("floor_adds", "rate"), col("aps_memory", "add_rate")
    if not floor:
        return []  # a saved run from before the floor existed
    return [
        Row(
            f"  floor=the same requests decoded and inserted"
            f" (floor {median(floor) / median(peer):.2g}x peer)",
            "schedules/s",
            col("schedd_store", "rate"),
            floor=floor,
        )
    ]


def _payload(n: dict[str, int], col: Col) -> list[Row]:
    """Scenario 5: the 64 KiB run minus the tiny run, repetition by repetition."""
    big, tiny = "schedd_payload_64k", "schedd_payload_tiny"
    return [
        Row(
            f"5 RSS: {n['payload']:,} x 64 KiB minus tiny",
            "MB",
            _diff(col(big, "rss_added"), col(tiny, "rss_added"), MB),
            _diff(col("aps_payload_64k", "rss_delta"), col("aps_payload_tiny", "rss_delta"), MB),
            target="<=20",
            met=lambda s, pe, f: s <= 20,
        ),
        Row(
            "5 RSS: same after a restart",
            "MB",
            _diff(col(big, "rss_restart"), col(tiny, "rss_restart"), MB),
        ),
        Row("5 pulse commit rate, 64 KiB tasks", "firings/s", col(big, "rate")),
        Row("5 pulse commit rate, tiny tasks", "firings/s", col(tiny, "rate")),
        Row(
            f"5 {n['refused']:,} x 5 MB task: refused",
            "requests",
            col("schedd_refused", "too_large"),
            target=f"={n['refused']}",
            met=lambda s, pe, f: s == n["refused"],
        ),
        Row(
            "  RSS growth from those attempts",
            "MB",
            _diff(col("schedd_refused", "rss_after"), col("schedd_refused", "rss_before"), MB),
        ),
    ]


def _at_least(share: float) -> Callable[[float, float | None, float | None], bool]:
    """Met when schedd reaches ``share`` of the floor."""
    return lambda s, pe, f: s >= share * (f or 0)


def _execution(n: dict[str, int], col: Col) -> list[Row]:
    """Scenarios 2 (end to end) and 7 (recovery)."""
    e2e = (
        ("python", f"2 e2e python {n['e2e_python']:,}, 2 workers", "floor_pipe", 0.7),
        ("command", f"2 e2e /bin/true {n['e2e_command']:,}, 2 at once", "floor_spawn2", 0.8),
    )
    python, command = (
        Row(
            label,
            "tasks/s",
            col(f"schedd_e2e_{kind}", "rate"),
            floor=col(floor, "rate"),
            target=f">={share} floor",
            met=_at_least(share),
        )
        for kind, label, floor, share in e2e
    )
    return [
        python,
        Row(
            "  floor=the round trip, each run's rows stored beside it",
            "tasks/s",
            col("schedd_e2e_python", "rate"),
            floor=col("floor_pipe_rows", "rate"),
        ),
        Row(
            "  floor=DESIGN's duties of a run, the leanest loop, schedd's worker",
            "tasks/s",
            col("schedd_e2e_python", "rate"),
            floor=col("floor_pool_duties", "rate"),
        ),
        command,
        Row(
            "  floor=DESIGN's duties of a command run, the leanest loop",
            "tasks/s",
            col("schedd_e2e_command", "rate"),
            floor=col("floor_spawn_duties", "rate"),
        ),
        Row(
            f"7 recovery, {n['pulse'] - 1:,} committed + 1 running",
            "s to READY",
            col("schedd_pulse", "recovery_ready_s"),
            target="<=5",
            met=lambda s, pe, f: s <= 5,
        ),
        Row(
            f"7 recovery, {n['recovery_submit']:,} submitted",
            "s to READY",
            col("schedd_recovery_submit", "ready_s"),
            target="<=5",
            met=lambda s, pe, f: s <= 5,
        ),
        Row(
            "  admin submit rate (4 conns, pipelined)",
            "submits/s",
            col("schedd_recovery_submit", "submit_rate"),
        ),
    ]


def _lanes(result: dict[str, Any], col: Col) -> list[Row]:
    """Scenario 8 (issue 5): a critical lane's every-second schedule while bulk work drains."""
    if "schedd_lanes" not in result["raw"]:
        return []  # a saved run from before the scenario existed
    n, secs = result["sizes"], result["lanes_s"]
    bulk, backlog = n["lanes_bulk"], n["lanes_backlog"]
    return [
        Row(
            f"8 critical lane, {bulk:,} bulk + {backlog:,} catch-up, {secs:.0f}s: p50",
            "ms",
            col("schedd_lanes", "critical_late.p50"),
        ),
        Row(
            "8 critical lane: start lateness p99",
            "ms",
            col("schedd_lanes", "critical_late.p99"),
            target="<50",
            met=lambda s, pe, f: s < 50,
        ),
        Row(
            "8 critical lane: early",
            "firings",
            col("schedd_lanes", "early"),
            target="0",
            met=lambda s, pe, f: s == 0,
        ),
        Row("8 meanwhile: bulk runs", "runs", col("schedd_lanes", "bulk_runs")),
        Row("8 meanwhile: catch-up runs", "runs", col("schedd_lanes", "backlog_runs")),
        Row(
            "8 ready queues: peak held",
            "firings",
            col("schedd_lanes", "ready_peak"),
            target="<=max_ready",
            met=lambda s, pe, f: s <= 10_000,
        ),
    ]
