"""The table: medians over repetitions, side by side, with the ratios that the targets name."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import median


@dataclass
class Row:
    """One figure: schedd's values, the peer's and the floor's (each over repetitions)."""

    label: str
    unit: str
    schedd: list[float]
    peer: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    target: str = ""
    met: Callable[[float, float | None, float | None], bool] | None = None

    def medians(self) -> tuple[float, float | None, float | None]:
        return (
            median(self.schedd),
            median(self.peer) if self.peer else None,
            median(self.floor) if self.floor else None,
        )

    def as_json(self) -> dict[str, Any]:
        s, p, f = self.medians()
        return {
            "label": self.label,
            "unit": self.unit,
            "schedd": self.schedd,
            "peer": self.peer,
            "floor": self.floor,
            "median": {"schedd": s, "peer": p, "floor": f},
            "ratio_peer": s / p if p else None,
            "ratio_floor": s / f if f else None,
            "target": self.target,
            "met": None if self.met is None else self.met(s, p, f),
        }


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(rows: list[Row]) -> str:
    head = ("figure", "unit", "schedd", "peer", "floor", "s/peer", "s/floor", "target", "met")
    lines = [head]
    for row in rows:
        j = row.as_json()
        m = j["median"]
        met = {None: "", True: "yes", False: "NO"}[j["met"]]
        lines.append(
            (
                row.label,
                row.unit,
                _num(m["schedd"]),
                _num(m["peer"]),
                _num(m["floor"]),
                _num(j["ratio_peer"]),
                _num(j["ratio_floor"]),
                row.target,
                met,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for pkg in ("schedd", "apscheduler", "sqlalchemy", "aiosqlite", "croniter", "tzlocal"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "load_before": os.getloadavg(),
    }
