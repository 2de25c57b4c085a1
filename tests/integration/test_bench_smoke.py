"""The benchmark harness keeps working: ``python -m bench --quick`` at a tiny scale.

Not a timed test: it asserts that every scenario ran against the real daemon and produced its
figures (0 lost, 0 early, every job of the big store stored, every oversized task refused), not
how fast anything was.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("apscheduler", reason="the bench extra (APScheduler 3.11) is not installed")


@pytest.mark.timeout(150)
def test_quick_bench_runs_every_scenario_at_tiny_scale(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scale",
            "0.01",
            "--reps",
            "1",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pulse" in proc.stdout
    result = json.loads(out.read_text())
    assert result["machine"]["sqlite"]
    pulses = result["raw"]["schedd_pulse"]
    assert [p["lost"] for p in pulses] == [0]
    assert [p["commit_late"]["early"] for p in pulses] == [0]
    assert pulses[0]["recovery_unfinished"] == pulses[0]["n"]
    raw = result["raw"]
    for key in ("schedd_e2e_python", "schedd_e2e_command"):
        assert [r["succeeded"] for r in raw[key]] == [r["n"] for r in raw[key]]
    [steady] = raw["schedd_steady"]
    assert steady["firings"] == steady["expected"] > 0
    assert (steady["unobserved"], steady["commit_late"]["early"]) == (0, 0)
    [store] = raw["schedd_store"]
    assert store["n"] == result["sizes"]["store"]
    assert len(store["ready_s"]) == len(store["rss"]) == 1
    for key in ("schedd_payload_tiny", "schedd_payload_64k"):
        [run] = raw[key]
        assert run["commit_s"] >= 0, run  # committed before T would be early
    [refused] = raw["schedd_refused"]
    assert refused["too_large"] == refused["attempted"] == result["sizes"]["refused"]
    [lane] = raw["schedd_lanes"]
    assert lane["early"] == 0
    assert lane["critical_runs"] >= 2, lane
    assert lane["backlog_runs"] == result["sizes"]["lanes_backlog"], "the catch-up drained"
    assert lane["ready_peak"] <= lane["max_ready"]
    empty = [row["label"] for row in result["rows"] if not math.isfinite(row["median"]["schedd"])]
    assert not empty, f"rows without a schedd figure: {empty}"
