"""``schedules.add_many`` stores byte for byte what ``schedules.add`` stores for the same spec.

The bulk path shares encodings between the entries of a request (a payload is encoded once per
distinct task), so this holds it to the single path's rows, including for tasks that Python
calls equal although their JSON differs (``[1]``, ``[1.0]``, ``[true]``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest

from schedd.store.sqlite import SqliteStore
from tests.component.adminharness import RecordingRunner, admin_ops
from tests.component.test_admin_ops import CONFIG, HOURLY, Ops
from tests.fakes import FakeClock

SPECS: list[dict[str, Any]] = [
    HOURLY,
    {"every": "90s", "jitter": "5s", "lane": "bulk", "command": ["/bin/echo", "a b"]},
    {"every": "90s", "command": ["/bin/env"], "env": {"B": "2", "A": "1"}, "cwd": "/tmp"},
    {"every": "90s", "command": ["/bin/env"], "env": {"A": "1", "B": "2"}, "cwd": "/tmp"},
    {"cron": "*/5 * * * *", "timezone": "Europe/Paris", "command": "echo hi", "shell": True},
    {"every": "1h", "python": "tests.pytasks:echo", "args": [1]},
    {"every": "1h", "python": "tests.pytasks:echo", "args": [1.0]},
    {"every": "1h", "python": "tests.pytasks:echo", "args": [True]},
    {"every": "1h", "python": "tests.pytasks:echo", "kwargs": {"x": 1}},
    {"every": "1h", "python": "tests.pytasks:echo", "kwargs": {"x": True}},
    {
        "every": "2h",
        "python": "tests.pytasks:echo",
        "tenant": "acme",
        "retry": {"max_attempts": 2},
        "expect_success_within": "5h",
        "on_quarantine": ["/bin/true", "q"],
    },
    {"at": "2030-01-01T00:00:00Z", "command": ["/bin/true"], "misfire": "skip"},
]
CONFIG_WITH_TENANT = CONFIG + "\n[tenants.acme]\n"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """Two daemon directories: one fed through ``add``, one through ``add_many``."""
    one, many = tmp_path / "one", tmp_path / "many"
    one.mkdir()
    many.mkdir()
    return one, many


@asynccontextmanager
async def admin(root: Path, clock: FakeClock) -> AsyncIterator[Ops]:
    """The admin ops over a store of their own under ``root``, the config loaded."""
    store = SqliteStore(root / "schedd.db")
    await store.open()
    try:
        runner = RecordingRunner()
        admin = admin_ops(root, store, clock, runner, CONFIG_WITH_TENANT)
        await admin.v.reloader.reload()
        yield Ops(admin, runner, store)
    finally:
        await store.close()


def tables(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every schedule row and every payload row, as SQLite holds them."""
    with closing(sqlite3.connect(db)) as conn:
        return (
            conn.execute("SELECT * FROM schedules ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM payloads ORDER BY id").fetchall(),
        )


def task_of(db: Path, name: str) -> dict[str, Any]:
    """The task JSON stored for schedule ``name``."""
    with closing(sqlite3.connect(db)) as conn:
        [body] = conn.execute(
            "SELECT p.body FROM schedules s JOIN payloads p ON p.id = s.payload_id"
            " WHERE s.name = ?",
            (name,),
        ).fetchone()
    task: dict[str, Any] = json.loads(body)["task"]
    return task


async def test_add_many_stores_the_rows_add_stores(
    roots: tuple[Path, Path], clock: FakeClock
) -> None:
    # Each spec twice, so later entries meet an encoding their request already made.
    entries: list[dict[str, Any]] = [
        {"name": f"s{i}-{copy}", "spec": spec, **({"paused": True} if i == 1 else {})}
        for copy in ("a", "b")
        for i, spec in enumerate(SPECS)
    ]
    async with admin(roots[0], clock) as one, admin(roots[1], clock) as many:
        for entry in entries:
            await one("schedules.add", **entry)
        added = await many("schedules.add_many", schedules=entries)
    assert added == {"added": len(entries), "paused": 2}

    db = roots[1] / "schedd.db"
    assert tables(db) == tables(roots[0] / "schedd.db")
    tasks = [task_of(db, f"s{i}-b") for i in range(len(SPECS))]
    for spec, task in zip(SPECS, tasks, strict=True):
        for key in ("args", "kwargs"):
            if key in spec:  # 1, 1.0 and true each keep their own JSON
                assert json.dumps(task[key]) == json.dumps(spec[key])
    assert tasks[2] == tasks[3], "the env's order does not change the payload"
