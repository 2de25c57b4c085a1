"""SQLite choices the contract does not state but the design relies on.

The reads that run often or on big tables must visit only the rows they report: the wake-up
loader and the admin reads filter through partial indexes (a query uses one only when it
repeats the index's WHERE term, so a spelling drift would silently scan the whole history).
Each statement the store really runs is captured and its plan asked from SQLite.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from schedd.model import FiringState
from schedd.store.records import NewFiring
from schedd.store.sqlite import SqliteStore
from tests.store.helpers import T0, committed

Query = Callable[[], Awaitable[Any]]


async def plans(store: SqliteStore, query: Query) -> list[str]:
    """The query plan of every statement ``query`` runs on the reader."""
    statements: list[str] = []
    await store._reader.set_trace_callback(statements.append)
    try:
        await query()
    finally:
        await store._reader.set_trace_callback(None)  # type: ignore[arg-type]  # None: off
    conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        return [
            " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in statements
        ]
    finally:
        conn.close()


async def test_reads_of_waiting_and_open_firings_use_their_partial_indexes(
    store: SqliteStore,
) -> None:
    await committed(store)
    unfinished = ("firings_ready", "firings_open")  # committed, and the others (schema v6)
    cases: list[tuple[Query, tuple[str, ...]]] = [
        (lambda: store.due_retries(after=None, until_ms=T0, limit=10), ("firings_wake",)),
        (store.lanes, unfinished),
        (lambda: store.backlog(schedule=None, top=5), unfinished),
        (lambda: store.count_firings([FiringState.COMMITTED]), ("firings_ready",)),
    ]
    for query, indexes in cases:
        found = await plans(store, query)
        assert found, "the query ran no statement"
        for plan in found:
            assert all(index in plan for index in indexes), (indexes, plan)
            assert not re.search(r"SCAN (firings|f)( /|$)", plan), plan  # the whole table


async def test_submitting_an_existing_key_stores_no_payload(store: SqliteStore) -> None:
    firing = NewFiring("k", None, "@submit", T0, T0, FiringState.COMMITTED, 0, "default")
    await store.submit(firing, '{"first":1}')
    _, created = await store.submit(firing, '{"second":2}')
    assert not created
    conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        bodies = [row[0] for row in conn.execute("SELECT body FROM payloads")]
    finally:
        conn.close()
    assert bodies == ['{"first":1}']


async def test_the_writer_keeps_statement_journals_in_memory(store: SqliteStore) -> None:
    """A multi-row statement in the group transaction needs a statement journal; on a temporary
    file that was an open, a write per page and an unlink on the event loop's thread."""
    rows = await store.writer.run(lambda conn: conn.execute_fetchall("PRAGMA temp_store"))
    assert rows == [(2,)]  # MEMORY
