"""How rows enter the SQLite store: content-addressed payloads and key-idempotent firings.

Every path that creates a firing (dispatch, an operator's trigger or backfill, an ad-hoc
submission) goes through :func:`insert_fresh` (dispatch directly, the others by way of
:func:`insert_new`, which also reads back the firings that already existed), and every path that
stores a task body (reconcile, ``add_schedule``, ``submit``) through :func:`store_payloads`, so
idempotency per key and one row per distinct payload hold the same way everywhere.

A firing inserted ``scheduled`` (work submitted for later) gets ``retry_at_ms`` = its due time:
it then wakes through the same index and the same never-early ``start_retries`` as a failed
firing's next attempt, so delayed work needs no loader of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from schedd.model import FiringState
from schedd.payload import payload_digest
from schedd.store.base import StoreMixin
from schedd.store.records import FIRST_ATTEMPT, FiringRecord, NewFiring
from schedd.store.rows import FIRING_COLS, chunks, firing_row, marks
from schedd.store.writer import Conn

_INSERT = (
    "INSERT INTO firings (key, schedule_id, schedule, scheduled_for_ms, due_ms, state,"
    " attempt, payload_id, lane, reason, created_ms, updated_ms, retry_at_ms, catchup) VALUES "
)
_ROW = f"(?, ?, ?, ?, ?, ?, {FIRST_ATTEMPT}, ?, ?, ?, ?, ?, ?, ?)"
#: Firings per INSERT statement: 13 parameters each stays under SQLite's 32 766. One multi-row
#: statement costs about half of ``executemany`` over the same rows (one step, not one per row).
ROWS_PER_INSERT = 2000
#: Payloads per INSERT statement: at most this many, and at most this many bytes of bodies
#: (SQLite copies what it binds, so a statement's bodies are briefly held twice).
PAYLOADS_PER_STATEMENT = 2000
PAYLOAD_BYTES_PER_STATEMENT = 1 << 20
#: A payload row: ``(sha256, size in bytes, body)``.
_Payload = tuple[str, int, str]


@lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    """The INSERT of ``rows`` firings; an existing key is skipped and only new rows come back."""
    return _INSERT + ", ".join([_ROW] * rows) + " ON CONFLICT(key) DO NOTHING RETURNING id, key"


def _values(f: NewFiring) -> tuple[Any, ...]:
    created = f.stored_created_ms
    return (
        f.key,
        f.schedule_id,
        f.schedule,
        f.scheduled_for_ms,
        f.due_ms,
        f.state.value,
        f.payload_id,
        f.lane,
        f.reason,
        created,
        created,
        f.due_ms if f.state is FiringState.SCHEDULED else None,
        int(f.catchup),
    )


async def store_payloads(conn: Conn, bodies: Sequence[str]) -> list[int]:
    """The id of the payload row holding each of ``bodies``, inserting the new ones.

    One statement per few thousand distinct bodies rather than two per body: reconcile stores
    a whole config at once, and its schedules often share a task. Each distinct body is hashed
    once (``add_many``'s thousand schedules are often one body, the same ``str`` each time)."""
    digest_of = {b: payload_digest(b) for b in dict.fromkeys(bodies)}
    ids: dict[str, int] = {}
    for chunk in _payload_chunks([(d, len(b.encode()), b) for b, d in digest_of.items()]):
        await conn.execute_fetchall(
            "INSERT INTO payloads (sha256, size, body) VALUES "
            + ", ".join(["(?, ?, ?)"] * len(chunk))
            + " ON CONFLICT(sha256) DO NOTHING",
            [v for row in chunk for v in row],
        )
        rows = await conn.execute_fetchall(
            f"SELECT sha256, id FROM payloads WHERE sha256 IN ({marks(len(chunk))})",
            [digest for digest, _, _ in chunk],
        )
        ids.update((str(r[0]), int(r[1])) for r in rows)
    return [ids[digest_of[b]] for b in bodies]


def _payload_chunks(payloads: list[_Payload]) -> Iterator[list[_Payload]]:
    """``payloads`` in runs bounded by ``PAYLOADS_PER_STATEMENT`` and its byte budget (a run
    always takes at least one, however large)."""
    run: list[_Payload] = []
    size = 0
    for payload in payloads:
        if run and (
            len(run) >= PAYLOADS_PER_STATEMENT or size + payload[1] > PAYLOAD_BYTES_PER_STATEMENT
        ):
            yield run
            run, size = [], 0
        run.append(payload)
        size += payload[1]
    if run:
        yield run


async def _by_key(conn: Conn, keys: Sequence[str]) -> dict[str, FiringRecord]:
    found: dict[str, FiringRecord] = {}
    for chunk in chunks(keys):
        rows = await conn.execute_fetchall(
            f"SELECT {FIRING_COLS} FROM firings WHERE key IN ({marks(len(chunk))})", chunk
        )
        found.update((r[1], firing_row(r)) for r in rows)
    return found


async def insert_fresh(conn: Conn, firings: Sequence[NewFiring]) -> list[int | None]:
    """Insert the firings whose key is new; for each, in input order, the id it was stored
    under, or ``None`` when its key was already stored or repeated earlier in ``firings``.

    The database decides (``ON CONFLICT DO NOTHING`` on the unique key), so there is no read
    before the write, and the ids come back from the insert itself (``RETURNING``) rather than
    from a read after it. Rows go in input order, so of a repeated key the first one is kept.
    """
    created: dict[str, int] = {}
    for chunk in chunks(firings, ROWS_PER_INSERT):
        rows = await conn.execute_fetchall(
            _insert_sql(len(chunk)), [v for f in chunk for v in _values(f)]
        )
        created.update((key, fid) for fid, key in rows)
    return [created.pop(f.key, None) for f in firings]


async def insert_new(conn: Conn, firings: Sequence[NewFiring]) -> list[tuple[FiringRecord, bool]]:
    """Insert the firings whose key is new; ``(record, created)`` for each, in input order.

    A key already stored, or repeated earlier in ``firings``, keeps the first firing and
    reports it with ``created`` False."""
    if not firings:
        return []
    ids = await insert_fresh(conn, firings)
    stored = await _by_key(conn, list(dict.fromkeys(f.key for f in firings)))
    return [(stored[f.key], fid is not None) for f, fid in zip(firings, ids, strict=True)]


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
        async def unit(conn: Conn) -> list[tuple[FiringRecord, bool]]:
            return await insert_new(conn, firings)

        return await self._write(unit)

    async def submit(self, firing: NewFiring, body: str) -> tuple[FiringRecord, bool]:
        async def unit(conn: Conn) -> tuple[FiringRecord, bool]:
            existing = await _by_key(conn, [firing.key])
            if firing.key in existing:
                return existing[firing.key], False
            [payload_id] = await store_payloads(conn, [body])
            [result] = await insert_new(conn, [dataclasses.replace(firing, payload_id=payload_id)])
            return result

        return await self._write(unit)
