"""``python -m bench``: every scenario, side by side, repeated, medians and ratios in one table.

Repetitions are interleaved (floors, peer, schedd; then again), so a noisy neighbour on a
shared machine slows all three alike: the ratios inside one run are what count, not the
absolute figures.

What has no peer or floor to interleave with, and whose figures are already aggregates over
thousands of firings or do not vary between runs, runs once, to keep within the time budget:
the big store (built once, restarted ``STORE_RESTARTS`` times), the steady state, payloads
and recovery (which restarts its store ``--reps`` times).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

from bench import bigstore, e2e, lanes, payload, pulse, recovery, steady
from bench.common import now_s, run_child
from bench.report import machine, table
from bench.rows import rows

# Sizes: quick (3 repetitions) finishes in < 3 min on 2 cores, full (1 repetition) in < 20 min;
# docs/benchmarks.md has the budget.
SIZES = {
    "quick": {
        "pulse": 20_000,
        "aps_sqlite": 500,
        "e2e_python": 2_000,
        "e2e_command": 500,
        "recovery_submit": 5_000,
        "spawn": 1_000,
        "pipe": 20_000,
        "steady": 1_000,
        "store": 100_000,
        "payload": 3_000,
        "refused": 300,
        "lanes_bulk": 20_000,
        "lanes_backlog": 2_000,
    },
    "full": {
        "pulse": 500_000,
        "aps_sqlite": 5_000,
        "e2e_python": 100_000,
        "e2e_command": 10_000,
        "recovery_submit": 20_000,  # the 500 000 pulse's restart is 7 at full size
        "spawn": 3_000,
        "pipe": 100_000,
        "steady": 1_000,
        "store": 1_000_000,
        "payload": 3_000,
        "refused": 300,
        "lanes_bulk": 100_000,
        "lanes_backlog": 10_000,
    },
}
#: Seconds of steady state (scenario 3), and of the critical lane's window under load (8).
STEADY_S = {"quick": 10.0, "full": 60.0}
LANES_S = {"quick": 15.0, "full": 40.0}
#: Restarts of the big store (scenario 4), each a start-up figure.
STORE_RESTARTS = 1


def _scaled(sizes: dict[str, int], scale: float) -> dict[str, int]:
    return {k: max(20, int(v * scale)) for k, v in sizes.items()}


class Runs:
    """Every raw result by scenario, and the seconds each scenario took (the budget's ledger)."""

    def __init__(self) -> None:
        self.raw: dict[str, list[Any]] = defaultdict(list)
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, key: str, work: Callable[[], Any]) -> Any:
        t0 = now_s()
        result = work()
        self.seconds[key] += now_s() - t0
        self.raw[key].append(result)
        return result

    def child(self, key: str, target: str, **args: Any) -> None:
        """A scenario measured in a fresh interpreter (floors, the peer)."""
        self(key, lambda: run_child(target, args))


def run(quick: bool, scale: float, reps: int) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    n = _scaled(SIZES[mode], scale)
    steady_s = max(2.0, STEADY_S[mode] * scale)
    r = Runs()
    t0 = now_s()
    # First, as its add rate sets how long every pulse must wait for the daemon to start.
    store = r("schedd_store", lambda: bigstore.bigstore(n["store"], STORE_RESTARTS))

    def lead(count: int) -> float:
        """Seconds from spawn covering start-up and ``count`` schedules added, plus margin.
        (A config of ``count`` schedules parses at about the same rate as they are added.)"""
        return 1.25 * (float(store["empty_ready_s"]) + count / float(store["rate"])) + 3.0

    for rep in range(reps):
        print(f"# repetition {rep + 1}/{reps} ({now_s() - t0:.0f}s)", file=sys.stderr)
        r.child("floor_timer", "bench.floors:timer_pulse", n=n["pulse"])
        r.child("floor_sqlite", "bench.floors:sqlite_inserts", n=n["pulse"])
        r.child("floor_schedd_rows", "bench.floors:schedd_firings", n=n["pulse"])
        r.child("floor_dispatch_duties", "bench.floors:dispatch_duties", n=n["pulse"])
        r.child("floor_adds", "bench.floors:schedd_adds", n=n["store"])
        r.child("floor_spawn1", "bench.floors:spawn", n=n["spawn"], parallel=1)
        r.child("floor_spawn2", "bench.floors:spawn", n=n["spawn"], parallel=2)
        r.child("floor_spawn_duties", "bench.floors:spawn_duties", n=n["spawn"])
        r.child("floor_pipe", "bench.floors:pipe_round_trip", n=n["pipe"])
        r.child("floor_pipe_rows", "bench.floors:pipe_with_rows", n=n["pipe"])
        r.child("floor_pool_duties", "bench.floors:pool_duties", n=n["pipe"])
        r.child("aps_memory", "bench.apsched:pulse", n=n["pulse"])
        r.child("aps_sqlite", "bench.apsched:pulse", n=n["aps_sqlite"], store="sqlite")
        for key, size in (("tiny", 0), ("64k", payload.NEAR_CAP)):
            r.child(
                f"aps_payload_{key}",
                "bench.apsched:payload_rss",
                n=n["payload"],
                payload_bytes=size,
            )
        r("schedd_pulse", lambda: pulse.pulse(n["pulse"], lead(n["pulse"])))
        for kind in ("python", "command"):
            count = n[f"e2e_{kind}"]
            r(f"schedd_e2e_{kind}", partial(e2e.end_to_end, count, kind, lead(count)))
    print(f"# once ({now_s() - t0:.0f}s)", file=sys.stderr)
    r.child("floor_commits", "bench.floors:commit_latency", seconds=min(steady_s, 20.0))
    r.child("floor_steady", "bench.steady_floor:group_commit", n=n["steady"], duration_s=steady_s)
    r("schedd_steady", lambda: steady.steady(n["steady"], steady_s))
    for key, size in (("tiny", 0), ("64k", payload.NEAR_CAP)):
        r(f"schedd_payload_{key}", partial(payload.payload, n["payload"], size))
    r("schedd_refused", lambda: payload.refused(n["refused"]))
    r("schedd_recovery_submit", lambda: recovery.recovery(n["recovery_submit"], reps))
    lanes_s = max(3.0, LANES_S[mode] * scale)
    lanes_n = n["lanes_bulk"] + n["lanes_backlog"]
    r(
        "schedd_lanes",
        lambda: lanes.lanes_under_load(n["lanes_bulk"], n["lanes_backlog"], lanes_s, lead(lanes_n)),
    )
    return {
        "sizes": n,
        "steady_s": steady_s,
        "lanes_s": lanes_s,
        "reps": reps,
        "elapsed_s": now_s() - t0,
        "seconds_by_scenario": dict(r.seconds),
        "raw": dict(r.raw),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: < 3 min on 2 cores")
    parser.add_argument("--json", metavar="FILE", help="write every raw figure and the machine")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (smoke)")
    parser.add_argument(
        "--reps", type=int, help="repetitions (default: 3 with --quick, for medians; else 1)"
    )
    args = parser.parse_args(argv)
    reps = args.reps or (3 if args.quick else 1)
    info = machine()
    result = run(args.quick, args.scale, reps)
    if args.json:  # the raw figures first: a long run is not lost to a bug in the table
        _dump(args.json, {"machine": info, **result})
    table_rows = rows(result)
    print(
        f"schedd bench ({'quick' if args.quick else 'full'}, scale {args.scale}, "
        f"{reps} reps, {result['elapsed_s']:.0f}s) on {info['cpu']} x{info['cores']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}"
    )
    print(table(table_rows))
    if args.json:
        _dump(args.json, {"machine": info, **result, "rows": [r.as_json() for r in table_rows]})
    return 0


def _dump(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
