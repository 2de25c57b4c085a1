"""The operations that change things (schedules.*, submit, firings.remove, reload) and who may
call them, driven through ``AdminOps.handle`` over a real SQLite store on a fake clock."""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Any

import pytest

from schedd.admin.ops import AdminOps
from schedd.admin.protocol import Peer, Request
from schedd.errors import ConfigError, Conflict, InvalidArgument, NotFound, PermissionDenied
from schedd.keys import format_instant
from schedd.model import FiringState
from schedd.store.sqlite import SqliteStore
from tests.component.adminharness import PEER, RecordingRunner, admin_ops
from tests.fakes import FakeClock

MINUTE = 60_000
HOURLY = {"cron": "0 * * * *", "timezone": "UTC", "command": ["/bin/true"], "timeout": "10m"}
CONFIG = """
[daemon]
state_dir = "state"

[lanes.bulk]
weight = 1

[schedules.from-file]
every = "1h"
command = ["/bin/true"]
"""


class Ops:
    def __init__(self, ops: AdminOps, runner: RecordingRunner, store: SqliteStore) -> None:
        self.ops, self.runner, self.store = ops, runner, store

    async def __call__(self, op: str, peer: Peer = PEER, **args: Any) -> Any:
        return await self.ops.handle(Request(1, op, args), peer)


@pytest.fixture
async def ops(store: SqliteStore, clock: FakeClock, tmp_path: Path) -> Ops:
    runner = RecordingRunner()
    admin = admin_ops(tmp_path, store, clock, runner, CONFIG)
    await admin.v.reloader.reload()
    return Ops(admin, runner, store)


# --- schedules -------------------------------------------------------------------------------


async def test_add_stores_an_api_schedule_validated_like_the_config_file(ops: Ops) -> None:
    added = await ops("schedules.add", name="hourly", spec=HOURLY)
    assert added["source"] == "api"
    assert added["next_fire_at"] == "2026-01-01T00:00:00.000Z"  # an occurrence at now counts
    assert added["policies"]["timeout_ms"] == 600_000
    assert (await ops.store.get_schedule("hourly")).spec.source.value == "api"

    with pytest.raises(ConfigError) as bad:
        await ops("schedules.add", name="broken", spec={**HOURLY, "timeout": 30, "cronn": "x"})
    assert "spec.timeout" in str(bad.value)
    assert "spec.cronn" in str(bad.value)
    with pytest.raises(NotFound):
        await ops.store.get_schedule("broken")

    with pytest.raises(Conflict, match="hourly"):
        await ops("schedules.add", name="hourly", spec=HOURLY)
    with pytest.raises(Conflict, match="from-file"):
        await ops("schedules.add", name="from-file", spec=HOURLY)


async def test_an_invalid_name_is_refused_naming_it(ops: Ops) -> None:
    with pytest.raises(InvalidArgument, match="Bad Name"):
        await ops("schedules.add", name="Bad Name", spec=HOURLY)


async def test_remove_deletes_api_schedules_and_refuses_config_ones(ops: Ops) -> None:
    await ops("schedules.add", name="hourly", spec=HOURLY)
    assert await ops("schedules.remove", name="hourly") == {"removed": "hourly"}
    with pytest.raises(NotFound):
        await ops("schedules.show", name="hourly")
    with pytest.raises(Conflict, match="config file"):
        await ops("schedules.remove", name="from-file")
    with pytest.raises(NotFound):
        await ops("schedules.remove", name="nope")


async def test_pause_and_resume_stick_across_a_reload(ops: Ops) -> None:
    assert (await ops("schedules.pause", name="from-file"))["paused"] is True
    assert (await ops("schedules.pause", name="from-file"))["paused"] is True  # idempotent
    await ops("reload")
    assert (await ops("schedules.show", name="from-file"))["paused"] is True
    assert (await ops("schedules.resume", name="from-file"))["paused"] is False


async def test_trigger_commits_a_manual_firing_even_while_paused(
    ops: Ops, clock: FakeClock
) -> None:
    await ops("schedules.pause", name="from-file")
    result = await ops("schedules.trigger", name="from-file")
    firing = result["firing"]
    assert result["created"] is True
    assert firing["key"] == f"from-file@manual:{format_instant(clock.wall_ms())}"
    assert firing["state"] == "committed"
    assert [t.key for t in ops.runner.submitted] == [firing["key"]]

    again = await ops("schedules.trigger", name="from-file", key=firing["key"])
    assert again["created"] is False
    assert again["firing"]["id"] == firing["id"]
    assert len(ops.runner.submitted) == 1


async def test_backfill_creates_on_time_keys_and_never_repeats_one(
    ops: Ops, clock: FakeClock
) -> None:
    clock.advance(5 * 3_600_000)
    args = {"name": "from-file", "from": "2026-01-01T01:00:00Z", "to": "2026-01-01T03:00:00Z"}
    dry = await ops("schedules.backfill", **args, dry_run=True)
    assert dry == {
        "occurrences": 3,
        "created": 0,
        "existing": 0,
        "first_key": "from-file@2026-01-01T01:00:00.000Z",
        "last_key": "from-file@2026-01-01T03:00:00.000Z",
    }
    assert ops.runner.submitted == []
    first = await ops("schedules.backfill", **args)
    assert (first["created"], first["existing"]) == (3, 0)
    wider = await ops("schedules.backfill", **{**args, "to": "2026-01-01T04:00:00Z"})
    assert (wider["created"], wider["existing"]) == (1, 3)
    assert len(ops.runner.submitted) == 4
    firing = await ops.store.get_firing("from-file@2026-01-01T02:00:00.000Z")
    assert firing.reason == "backfilled by an operator"


async def test_backfill_refuses_the_future_reversed_and_huge_ranges(ops: Ops) -> None:
    with pytest.raises(InvalidArgument, match=r"to: .* future"):
        await ops(
            "schedules.backfill",
            name="from-file",
            **{"from": "2025-12-31T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
        )
    with pytest.raises(InvalidArgument, match="before from"):
        await ops(
            "schedules.backfill",
            name="from-file",
            **{"from": "2025-12-31T00:00:00Z", "to": "2025-12-30T00:00:00Z"},
        )
    await ops("schedules.add", name="often", spec={"every": "1s", "command": ["/bin/true"]})
    with pytest.raises(InvalidArgument, match="narrow the range"):
        await ops(
            "schedules.backfill",
            name="often",
            **{"from": "2025-12-30T00:00:00Z", "to": "2025-12-31T00:00:00Z"},
        )
    with pytest.raises(InvalidArgument, match="from: "):
        await ops(
            "schedules.backfill",
            name="often",
            **{"from": "yesterday", "to": "2025-12-31T00:00:00Z"},
        )


# --- submit ----------------------------------------------------------------------------------


async def test_submit_commits_now_and_returns_the_existing_firing_for_a_known_key(
    ops: Ops,
) -> None:
    task = {"command": ["/bin/echo", "one-off"], "timeout": "1m"}
    first = await ops("submit", task=task, key="invoice-42")
    assert first["created"] is True
    assert first["firing"]["schedule"] == "@submit"
    assert first["firing"]["state"] == "committed"
    again = await ops("submit", task={"command": ["/bin/false"]}, key="invoice-42")
    assert again["created"] is False
    assert again["firing"]["id"] == first["firing"]["id"]
    assert [t.key for t in ops.runner.submitted] == ["invoice-42"]

    generated = await ops("submit", task=task)
    assert generated["firing"]["key"].startswith("submit:")


async def test_submit_for_later_waits_in_the_store_not_in_the_runner(
    ops: Ops, clock: FakeClock
) -> None:
    later = format_instant(clock.wall_ms() + 10 * MINUTE)
    result = await ops("submit", task={"command": ["/bin/true"]}, at=later, lane="bulk")
    assert result["firing"]["state"] == "scheduled"
    assert result["firing"]["lane"] == "bulk"
    assert ops.runner.submitted == []
    [(due, fid)] = await ops.store.due_retries(after=None, until_ms=2**62, limit=10)
    assert (due, fid) == (clock.wall_ms() + 10 * MINUTE, result["firing"]["id"])


async def test_submit_refuses_timing_keys_and_names_every_bad_task_key(ops: Ops) -> None:
    with pytest.raises(ConfigError) as bad:
        await ops("submit", task={"command": ["/bin/true"], "cron": "* * * * *", "timeout": 5})
    assert "task.cron" in str(bad.value)
    assert "task.timeout" in str(bad.value)
    with pytest.raises(ConfigError, match=r"task: .*missing the task"):
        await ops("submit", task={})
    with pytest.raises(InvalidArgument, match="task: expected an object"):
        await ops("submit", task=["/bin/true"])
    with pytest.raises(InvalidArgument, match="key"):
        await ops("submit", task={"command": ["/bin/true"]}, key="bad\nkey")
    with pytest.raises(ConfigError, match=r"payload"):
        await ops("submit", task={"command": ["/bin/echo", "x" * 70_000]})


# --- backlog and firings.remove ---------------------------------------------------------------


async def _queue(ops: Ops, n: int, text: str) -> None:
    for i in range(n):
        await ops("schedules.trigger", name="from-file", key=f"from-file@{text}-{i}")


async def test_backlog_groups_the_queue_and_remove_cancels_only_matches(ops: Ops) -> None:
    await _queue(ops, 3, "good")
    await _queue(ops, 5, "bad")
    b = await ops("backlog")
    [group] = b["groups"]
    assert (group["schedule"], group["state"], group["count"]) == ("from-file", "committed", 8)
    assert b["total"]["count"] == 8

    dry = await ops("firings.remove", schedule="from-file", match="bad", dry_run=True)
    assert (dry["matched"], dry["removed"], dry["remaining"]) == (5, 0, 5)
    batch = await ops("firings.remove", schedule="from-file", match="bad", limit=2)
    assert (batch["matched"], batch["removed"], batch["remaining"]) == (5, 2, 3)
    rest = await ops("firings.remove", schedule="from-file", match="bad")
    assert (rest["removed"], rest["remaining"]) == (3, 0)
    assert len(ops.runner.discarded) == 5
    removed = await ops.store.get_firing("from-file@bad-0")
    assert removed.state is FiringState.CANCELLED
    assert removed.reason == "removed by an operator"
    assert (await ops.store.get_firing("from-file@good-0")).state is FiringState.COMMITTED
    assert (await ops("backlog"))["total"]["count"] == 3


async def test_remove_refuses_running_firings_as_a_state(ops: Ops) -> None:
    with pytest.raises(InvalidArgument, match="running"):
        await ops("firings.remove", schedule="from-file", states=["running"], dry_run=True)


# --- reload ----------------------------------------------------------------------------------


async def test_reload_reports_what_changed_and_keeps_a_bad_file_out(
    ops: Ops, tmp_path: Path
) -> None:
    config = tmp_path / "schedd.toml"
    config.write_text(
        CONFIG.replace('every = "1h"', 'every = "2h"') + "\n[schedules.new]\n"
        'every = "5m"\ncommand = ["/bin/true"]\n\n[workers]\nmax = 9\n'
    )
    report = await ops("reload")
    assert (report["added"], report["changed"], report["removed"]) == (["new"], ["from-file"], [])
    assert report["restart_required"] == ["workers"]

    config.write_text(CONFIG + "\n[schedules.new]\nevery = 5\n")
    with pytest.raises(ConfigError, match=r"schedules\.new"):
        await ops("reload")
    assert (await ops("schedules.show", name="new"))["trigger"]["every_ms"] == 300_000

    config.write_text('[daemon]\nstate_dir = "state"\n\n[workers]\nmax = 9\n')
    report = await ops("reload")
    assert sorted(report["removed"]) == ["from-file", "new"]
    # Still running the [workers] it started with, and [lanes.bulk] is gone from the file:
    # both are a restart away.
    assert report["restart_required"] == ["workers", "lanes"]


async def test_a_reload_keeps_no_parsed_schedules_and_leaves_cycle_collection_on(
    ops: Ops, tmp_path: Path
) -> None:
    """The store holds the schedules; holding their parsed specs too would be most of a big
    deployment's memory, and collection is paused only while the file is parsed."""
    config = tmp_path / "schedd.toml"
    config.write_text(CONFIG + '\n[schedules.new]\nevery = "5m"\ncommand = ["/bin/true"]\n')
    await ops("reload")
    held = ops.ops.v.reloader.config
    assert held.schedules == ()
    assert held.sha256 == hashlib.sha256(config.read_bytes()).hexdigest()
    assert (await ops("schedules.show", name="new"))["trigger"]["every_ms"] == 300_000
    assert gc.isenabled()

    config.write_text("[schedules.broken\n")
    with pytest.raises(ConfigError):
        await ops("reload")
    assert gc.isenabled(), "a failed reload resumes collection too"


# --- permissions ------------------------------------------------------------------------------

STRANGER = Peer(pid=7, uid=54321, gid=54321)
READER = Peer(pid=8, uid=54322, gid=54322)


async def test_strangers_get_nothing_and_readers_only_read(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    runner = RecordingRunner()
    admin = admin_ops(
        tmp_path, store, clock, runner, CONFIG + '\n[admin]\nreaders = ["uid:54322"]\n'
    )
    ops = Ops(admin, runner, store)
    await admin.v.reloader.reload()
    for op in ("status", "nonsense.op", "schedules.trigger"):
        with pytest.raises(PermissionDenied, match="uid 54321"):
            await ops(op, STRANGER, name="from-file")
    assert (await ops("schedules.list", READER))["schedules"][0]["name"] == "from-file"
    with pytest.raises(PermissionDenied, match="reader"):
        await ops("schedules.trigger", READER, name="from-file")
    assert runner.submitted == []
