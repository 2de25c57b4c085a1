"""The benchmark harness keeps working: ``python -m bench --quick`` at a tiny scale.

Not a timed test: it asserts that every scenario ran against the real daemon and produced its
figures (0 lost, 0 early), not how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("apscheduler", reason="the bench extra (APScheduler 3.11) is not installed")


@pytest.mark.timeout(120)
def test_quick_bench_runs_every_scenario_at_tiny_scale(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scale",
            "0.005",
            "--reps",
            "1",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pulse" in proc.stdout
    result = json.loads(out.read_text())
    assert result["machine"]["sqlite"]
    pulses = result["raw"]["schedd_pulse"]
    assert [p["lost"] for p in pulses] == [0]
    assert [p["early"] for p in pulses] == [0]
    assert pulses[0]["recovery_unfinished"] == pulses[0]["n"]
    for key in ("schedd_e2e_python", "schedd_e2e_command"):
        assert [r["succeeded"] for r in result["raw"][key]] == [r["n"] for r in result["raw"][key]]
    labels = [row["label"] for row in result["rows"]]
    assert all(row["median"]["schedd"] is not None for row in result["rows"]), labels
