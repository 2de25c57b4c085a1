"""``schedules.add_many`` through ``AdminOps.handle`` over a real SQLite store on a fake clock:
each entry read as ``schedules.add`` reads one, all stored or none, the dispatcher re-armed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schedd.admin.schedules import MAX_ADD_MANY, MAX_PROBLEMS
from schedd.errors import ConfigError, Conflict, InvalidArgument, PermissionDenied
from schedd.store.sqlite import SqliteStore
from tests.component.adminharness import RecordingRunner, admin_ops
from tests.component.test_admin_ops import CONFIG, HOURLY, READER, Ops
from tests.fakes import FakeClock

SOON = {"every": "10s", "jitter": "0s", "command": ["/bin/true"]}


@pytest.fixture
async def ops(store: SqliteStore, clock: FakeClock, tmp_path: Path) -> Ops:
    runner = RecordingRunner()
    admin = admin_ops(
        tmp_path, store, clock, runner, CONFIG + '\n[admin]\nreaders = ["uid:54322"]\n'
    )
    await admin.v.reloader.reload()
    await admin.v.dispatcher.refill()  # the horizon is loaded: what is due soon must be armed
    return Ops(admin, runner, store)


def entries(n: int, spec: dict[str, Any] = HOURLY, prefix: str = "s") -> list[dict[str, Any]]:
    return [{"name": f"{prefix}{i}", "spec": spec} for i in range(n)]


async def names(ops: Ops) -> set[str]:
    return {s["name"] for s in (await ops("schedules.list"))["schedules"]}


async def test_add_many_stores_each_entry_as_add_would_and_arms_the_ones_due_soon(
    ops: Ops,
) -> None:
    watched = {**HOURLY, "cron": "0 3 * * *", "expect_success_within": "26h"}
    result = await ops(
        "schedules.add_many",
        schedules=[
            {"name": "soon", "spec": SOON},
            {"name": "held", "spec": SOON, "paused": True},
            {"name": "daily", "spec": watched},
        ],
    )
    assert result == {"added": 3, "paused": 1}
    await ops("schedules.add", name="single", spec=watched)
    many = await ops("schedules.show", name="daily")
    single = await ops("schedules.show", name="single")
    for same in ("source", "trigger", "task", "policies", "next_fire_at", "paused", "lane"):
        assert many[same] == single[same], same

    timer = ops.ops.v.timer
    by_name = {n: (await ops.store.get_schedule(n)).id for n in ("soon", "held", "daily")}
    assert ("s", by_name["soon"]) in timer, "due within the loaded horizon: armed now"
    assert ("s", by_name["held"]) not in timer, "paused"
    assert ("s", by_name["daily"]) not in timer, "beyond the horizon: the loader's job"
    assert {"daily", "single"} <= set(ops.ops.v.telemetry.overdue.overdue())


async def test_one_bad_entry_refuses_the_batch_naming_every_problem_by_index_and_name(
    ops: Ops,
) -> None:
    batch: list[Any] = [
        *entries(2),
        {"name": "broken", "spec": {**HOURLY, "timeout": 30, "cronn": "x"}},
        "not an object",
        {"name": "typo", "spce": HOURLY},
        {"name": "Bad Name", "spec": HOURLY},
        {"name": "flag", "spec": HOURLY, "paused": "yes"},
    ]
    with pytest.raises(ConfigError) as refused:
        await ops("schedules.add_many", schedules=batch)
    lines = str(refused.value).splitlines()
    assert sorted(lines[:2]) == [
        "schedules[2] 'broken': spec.cronn: unknown key; did you mean \"cron\"?",
        "schedules[2] 'broken': spec.timeout: ambiguous duration 30: a bare number has no"
        ' unit; write "30s" (or "30ms", "30m")',
    ]
    assert lines[2].startswith("schedules[3]: expected an object")
    assert lines[3].startswith("schedules[4] 'typo': unknown argument 'spce' (did you mean 'spec'")
    assert lines[4].startswith("schedules[5] 'Bad Name': ")
    assert lines[5].startswith("schedules[6] 'flag': paused: expected true or false")
    assert lines[-1] == "nothing was added"
    assert await names(ops) == {"from-file"}


async def test_a_refusal_lists_the_first_problems_and_counts_the_rest(ops: Ops) -> None:
    bad = entries(MAX_PROBLEMS + 30, {**HOURLY, "timeout": 30})
    with pytest.raises(ConfigError) as refused:
        await ops("schedules.add_many", schedules=bad)
    lines = str(refused.value).splitlines()
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[-1] == "... and 30 more problem(s); nothing was added"


async def test_a_taken_or_repeated_name_adds_nothing(ops: Ops) -> None:
    await ops("schedules.add", name="api-one", spec=HOURLY)
    for name, origin in (("from-file", "config file"), ("api-one", "admin API")):
        batch = [*entries(3), {"name": name, "spec": HOURLY}]
        with pytest.raises(Conflict, match=f"'{name}' already exists.*{origin}"):
            await ops("schedules.add_many", schedules=batch)
    with pytest.raises(InvalidArgument, match="'s0' is given twice"):
        await ops("schedules.add_many", schedules=[*entries(3), *entries(2)])
    assert await names(ops) == {"from-file", "api-one"}


async def test_the_list_must_hold_one_to_max_entries(ops: Ops) -> None:
    for wrong in ([], entries(MAX_ADD_MANY + 1), {"name": "x", "spec": HOURLY}):
        with pytest.raises(
            InvalidArgument, match=f"schedules: expected a list of 1 to {MAX_ADD_MANY}"
        ):
            await ops("schedules.add_many", schedules=wrong)
    assert (await ops("schedules.add_many", schedules=entries(MAX_ADD_MANY)))["added"] == 1000
    assert len(await ops.store.list_schedules(limit=2000)) == MAX_ADD_MANY + 1


async def test_readers_may_not_add_many(ops: Ops) -> None:
    with pytest.raises(PermissionDenied, match="reader"):
        await ops("schedules.add_many", READER, schedules=entries(1))
    assert await names(ops) == {"from-file"}
