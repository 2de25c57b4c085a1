"""The peer: APScheduler 3.11, the scheduler a Python user would otherwise pick.

AsyncIOScheduler with its MemoryJobStore, and with the SQLAlchemy job store on SQLite (the
durable configuration, closest in promise to schedd). Jobs are coroutines so they run on the
loop, not in a thread pool: the fastest way APScheduler can fire. ``misfire_grace_time=None``
because with the default (1 s) a 100 000-job pulse is mostly dropped as missed, which would
make its rate look better than any work done.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import lateness_summary, now_s, rss_bytes, wall_s


class _Pulse:
    """Where fired jobs report; module-level because the SQLite store pickles a reference."""

    fired: list[float] = []  # noqa: RUF012 - one pulse per interpreter
    target = 0
    done: asyncio.Event | None = None


async def _job(due_ts: float) -> None:
    _Pulse.fired.append((wall_s() - due_ts) * 1000)
    if len(_Pulse.fired) == _Pulse.target and _Pulse.done is not None:
        _Pulse.done.set()


def _scheduler(store: str, tmp: Path) -> Any:
    from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

    if store == "memory":
        jobstore: Any = MemoryJobStore()
    else:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]

        jobstore = SQLAlchemyJobStore(url=f"sqlite:///{tmp / 'aps.db'}")
    return AsyncIOScheduler(jobstores={"default": jobstore}, timezone=UTC)


def _add(sched: Any, n: int, when: datetime) -> None:
    for i in range(n):
        sched.add_job(
            _job,
            "date",
            run_date=when,
            args=(when.timestamp(),),
            id=f"p{i}",
            misfire_grace_time=None,
        )


def pulse(n: int, store: str = "memory", cap_s: float = 120.0) -> dict[str, Any]:
    """Add N date jobs (add rate, memory per job), then fire N due in the same second."""

    async def main(tmp: Path) -> dict[str, Any]:
        sched = _scheduler(store, tmp)
        sched.start()
        gc.collect()
        rss0 = rss_bytes()
        t0 = now_s()
        _add(sched, n, datetime.now(UTC) + timedelta(days=1))
        add_s = now_s() - t0
        gc.collect()
        per_job = (rss_bytes() - rss0) / n
        sched.remove_all_jobs()
        _Pulse.fired.clear()
        _Pulse.target = n
        _Pulse.done = done = asyncio.Event()
        when = datetime.now(UTC) + timedelta(seconds=2 * add_s + 1.0)
        _add(sched, n, when)
        await asyncio.sleep(max(0.0, when.timestamp() - wall_s()))
        try:
            await asyncio.wait_for(done.wait(), cap_s)
            capped = False
        except TimeoutError:
            capped = True
        fired_s = wall_s() - when.timestamp()
        sched.shutdown(wait=False)
        return {
            "n": n,
            "fired": len(_Pulse.fired),
            "capped": capped,
            "rate": len(_Pulse.fired) / max(fired_s, 1e-9),
            "add_rate": n / add_s,
            "bytes_per_job": per_job,
            **lateness_summary(_Pulse.fired),
        }

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        return asyncio.run(main(Path(tmp)))


def payload_rss(n: int, payload_bytes: int) -> dict[str, Any]:
    """RSS of a MemoryJobStore holding N future jobs whose arguments are ``payload_bytes``.

    APScheduler keeps every job, arguments included, in memory; schedd keeps payloads on disk.
    """

    async def main() -> dict[str, Any]:
        sched = _scheduler("memory", Path("/tmp"))
        sched.start()
        gc.collect()
        rss0 = rss_bytes()
        when = datetime.now(UTC) + timedelta(days=1)
        for i in range(n):
            body = (f"{i:08d}" * (payload_bytes // 8 + 1))[:payload_bytes]
            sched.add_job(_job, "date", run_date=when, args=(body,), id=f"p{i}")
        gc.collect()
        rss = rss_bytes() - rss0
        sched.shutdown(wait=False)
        return {"rss_delta": rss}

    return asyncio.run(main())
