"""How rows enter the SQLite store: content-addressed payloads and key-idempotent firings.

Every path that creates a firing (dispatch, an operator's trigger or backfill, an ad-hoc
submission) goes through :func:`insert_new`, and every path that stores a task body (reconcile,
``add_schedule``, ``submit``) through :func:`store_payload`, so idempotency per key and one row per
distinct payload hold the same way everywhere.

A firing inserted ``scheduled`` (work submitted for later) gets ``retry_at_ms`` = its due time:
it then wakes through the same index and the same never-early ``start_retries`` as a failed
firing's next attempt, so delayed work needs no loader of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import aiosqlite

from schedd.model import FiringState
from schedd.payload import payload_digest
from schedd.store.base import StoreMixin
from schedd.store.records import FiringRecord, NewFiring
from schedd.store.rows import FIRING_COLS, chunks, firing_row, marks


async def store_payload(conn: aiosqlite.Connection, body: str) -> int:
    """The id of the payload row holding ``body``, inserted if no row has it yet."""
    digest = payload_digest(body)
    await conn.execute(
        "INSERT INTO payloads (sha256, size, body) VALUES (?, ?, ?) ON CONFLICT(sha256) DO NOTHING",
        (digest, len(body.encode()), body),
    )
    rows = list(await conn.execute_fetchall("SELECT id FROM payloads WHERE sha256 = ?", (digest,)))
    return int(rows[0][0])


async def _by_key(conn: aiosqlite.Connection, keys: Sequence[str]) -> dict[str, FiringRecord]:
    found: dict[str, FiringRecord] = {}
    for chunk in chunks(keys):
        rows = await conn.execute_fetchall(
            f"SELECT {FIRING_COLS} FROM firings WHERE key IN ({marks(len(chunk))})", chunk
        )
        found.update((r[1], firing_row(r)) for r in rows)
    return found


async def insert_new(
    conn: aiosqlite.Connection, firings: Sequence[NewFiring]
) -> list[tuple[FiringRecord, bool]]:
    """Insert the firings whose key is new; ``(record, created)`` for each, in input order.

    A key already stored, or repeated earlier in ``firings``, keeps the first firing and
    reports it with ``created`` False."""
    if not firings:
        return []
    keys = list(dict.fromkeys(f.key for f in firings))
    existing = await _by_key(conn, keys)
    fresh: dict[str, NewFiring] = {}
    for f in firings:
        if f.key not in existing:
            fresh.setdefault(f.key, f)
    await conn.executemany(
        "INSERT INTO firings (key, schedule_id, schedule, scheduled_for_ms, due_ms, state,"
        " attempt, payload_id, lane, reason, created_ms, updated_ms, retry_at_ms, catchup)"
        " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                f.key,
                f.schedule_id,
                f.schedule,
                f.scheduled_for_ms,
                f.due_ms,
                f.state.value,
                f.payload_id,
                f.lane,
                f.reason,
                f.due_ms if f.created_ms is None else f.created_ms,
                f.due_ms if f.created_ms is None else f.created_ms,
                f.due_ms if f.state is FiringState.SCHEDULED else None,
                int(f.catchup),
            )
            for f in fresh.values()
        ],
    )
    stored = existing | await _by_key(conn, list(fresh))
    result: list[tuple[FiringRecord, bool]] = []
    for f in firings:
        result.append((stored[f.key], fresh.pop(f.key, None) is not None))
    return result


class IntakeMixin(StoreMixin):
    async def existing_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(keys):
            rows = await self._read(
                f"SELECT key FROM firings WHERE key IN ({marks(len(chunk))})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    async def insert_firings(self, firings: Sequence[NewFiring]) -> list[tuple[FiringRecord, bool]]:
        async def unit(conn: aiosqlite.Connection) -> list[tuple[FiringRecord, bool]]:
            return await insert_new(conn, firings)

        return await self._write(unit)

    async def submit(self, firing: NewFiring, body: str) -> tuple[FiringRecord, bool]:
        async def unit(conn: aiosqlite.Connection) -> tuple[FiringRecord, bool]:
            existing = await _by_key(conn, [firing.key])
            if firing.key in existing:
                return existing[firing.key], False
            payload_id = await store_payload(conn, body)
            [result] = await insert_new(conn, [dataclasses.replace(firing, payload_id=payload_id)])
            return result

        return await self._write(unit)
