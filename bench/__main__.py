"""``python -m bench``: every scenario, side by side, repeated, medians and ratios in one table.

Repetitions are interleaved (floors, peer, schedd; then again), so a noisy neighbour on a
shared machine slows all three alike: the ratios inside one run are what count, not the
absolute figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any

from bench import e2e, pulse, recovery
from bench.common import now_s, run_child
from bench.report import Row, machine, table

# Sizes: quick finishes in < 3 min on 2 cores, full in < 20 min (docs/benchmarks.md).
SIZES = {
    "quick": {
        "pulse": 20_000,
        "aps_sqlite": 2_000,
        "e2e_python": 5_000,
        "e2e_command": 1_000,
        "recovery_submit": 5_000,
        "spawn": 1_000,
        "pipe": 20_000,
    },
    "full": {
        "pulse": 100_000,
        "aps_sqlite": 5_000,
        "e2e_python": 100_000,
        "e2e_command": 10_000,
        "recovery_submit": 100_000,
        "spawn": 3_000,
        "pipe": 100_000,
    },
}


def _scaled(sizes: dict[str, int], scale: float) -> dict[str, int]:
    return {k: max(20, int(v * scale)) for k, v in sizes.items()}


def run(quick: bool, scale: float, reps: int) -> dict[str, Any]:
    n = _scaled(SIZES["quick" if quick else "full"], scale)
    raw: dict[str, list[Any]] = defaultdict(list)
    t0 = now_s()
    added = pulse.add(n["pulse"])
    raw["schedd_add"].append(added)
    lead = 1.5 * added["ready_s"] + 2.0
    for rep in range(reps):
        print(f"# repetition {rep + 1}/{reps} ({now_s() - t0:.0f}s)", file=sys.stderr)
        raw["floor_timer"].append(run_child("bench.floors:timer_pulse", {"n": n["pulse"]}))
        raw["floor_sqlite"].append(run_child("bench.floors:sqlite_inserts", {"n": n["pulse"]}))
        raw["floor_spawn1"].append(
            run_child("bench.floors:spawn", {"n": n["spawn"], "parallel": 1})
        )
        raw["floor_spawn2"].append(
            run_child("bench.floors:spawn", {"n": n["spawn"], "parallel": 2})
        )
        raw["floor_pipe"].append(run_child("bench.floors:pipe_round_trip", {"n": n["pipe"]}))
        raw["aps_memory"].append(run_child("bench.apsched:pulse", {"n": n["pulse"]}))
        raw["aps_sqlite"].append(
            run_child("bench.apsched:pulse", {"n": n["aps_sqlite"], "store": "sqlite"})
        )
        raw["schedd_pulse"].append(pulse.pulse(n["pulse"], lead))
        raw["schedd_e2e_python"].append(e2e.end_to_end(n["e2e_python"], "python", lead))
        raw["schedd_e2e_command"].append(e2e.end_to_end(n["e2e_command"], "command", 3.0))
    raw["schedd_recovery_submit"].append(recovery.recovery(n["recovery_submit"], reps))
    return {"sizes": n, "reps": reps, "elapsed_s": now_s() - t0, "raw": dict(raw)}


def rows(result: dict[str, Any]) -> list[Row]:
    raw, n = result["raw"], result["sizes"]

    def col(key: str, field: str) -> list[float]:
        out: list[float] = []
        for r in raw.get(key, []):
            v: Any = r
            for part in field.split("."):
                v = v[part]
            out.extend(v if isinstance(v, list) else [v])
        return [float(x) for x in out]

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
        Row(
            "1 pulse: commit lateness p50",
            "ms",
            col("schedd_pulse", "commit_late.p50"),
            col("aps_memory", "p50"),
            col("floor_timer", "p50"),
        ),
        Row(
            "1 pulse: commit lateness p99",
            "ms",
            col("schedd_pulse", "commit_late.p99"),
            col("aps_memory", "p99"),
            col("floor_timer", "p99"),
        ),
        Row(
            "1 pulse: commit lateness max",
            "ms",
            col("schedd_pulse", "commit_late.max"),
            col("aps_memory", "max"),
            col("floor_timer", "max"),
        ),
        Row("1 pulse: decision lateness p99", "ms", col("schedd_pulse", "decision_late.p99")),
        Row(
            "1 pulse: early + lost",
            "firings",
            [
                a + b
                for a, b in zip(
                    col("schedd_pulse", "early"), col("schedd_pulse", "lost"), strict=True
                )
            ],
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
            f"4 add {p:,} schedules (config)",
            "schedules/s",
            col("schedd_add", "rate"),
            col("aps_memory", "add_rate"),
            target=">=10x peer",
            met=lambda s, pe, f: s >= 10 * (pe or 0),
        ),
        Row(
            "4 memory per schedule",
            "bytes",
            col("schedd_add", "bytes_per_schedule"),
            col("aps_memory", "bytes_per_job"),
        ),
        Row(
            f"2 e2e python {n['e2e_python']:,}, 2 workers",
            "tasks/s",
            col("schedd_e2e_python", "rate"),
            floor=col("floor_pipe", "rate"),
            target=">=0.7 floor",
            met=lambda s, pe, f: s >= 0.7 * (f or 0),
        ),
        Row(
            f"2 e2e /bin/true {n['e2e_command']:,}, 2 at once",
            "tasks/s",
            col("schedd_e2e_command", "rate"),
            floor=col("floor_spawn2", "rate"),
            target=">=0.8 floor",
            met=lambda s, pe, f: s >= 0.8 * (f or 0),
        ),
        Row(
            "6 status latency p99 during pulse",
            "ms",
            col("schedd_pulse", "status_p99_ms"),
            target="<=100",
            met=lambda s, pe, f: s <= 100,
        ),
        Row(
            f"7 recovery, {p - 1:,} committed + 1 running",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: < 3 min on 2 cores")
    parser.add_argument("--json", metavar="FILE", help="write every raw figure and the machine")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (smoke)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (>= 3 for medians)")
    args = parser.parse_args(argv)
    info = machine()
    result = run(args.quick, args.scale, args.reps)
    table_rows = rows(result)
    print(
        f"schedd bench ({'quick' if args.quick else 'full'}, scale {args.scale}, "
        f"{args.reps} reps, {result['elapsed_s']:.0f}s) on {info['cpu']} x{info['cores']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}"
    )
    print(table(table_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": info, **result, "rows": [r.as_json() for r in table_rows]}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
