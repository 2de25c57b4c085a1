"""Fixtures shared by the suite: a fake clock and a real SQLite store on a temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schedd.store.sqlite import SqliteStore
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """Every store implementation the contract suite runs against (PostgreSQL joins later)."""
    assert request.param == "sqlite"
    s = SqliteStore(tmp_path / "schedd.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()
