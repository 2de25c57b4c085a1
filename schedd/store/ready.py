"""Reading committed firings back into memory, in order (``[dispatch] max_ready``).

A mixin of :class:`~schedd.store.sqlite.SqliteStore`. The runner holds at most ``max_ready``
tickets; every other committed firing waits here, in its row, and the runner pages it in by
lane, kind (fresh or catch-up) and id through the partial index ``firings_ready``. The page
runs on the *writer*, in the total order of commits: a firing the runner holds cannot start,
end and be forgotten between the page's snapshot and the runner reading the page, so a page
never hands back a firing that already ran.
"""

from __future__ import annotations

from schedd.store.base import StoreMixin
from schedd.store.records import FiringRecord, ReadySpan
from schedd.store.rows import FIRING_COLS, firing_row
from schedd.store.writer import Conn


class ReadyMixin(StoreMixin):
    async def ready_page(
        self, *, lane: str, catchup: bool, first_id: int, last_id: int, limit: int
    ) -> list[FiringRecord]:
        async def unit(conn: Conn) -> list[FiringRecord]:
            rows = await conn.execute_fetchall(
                f"SELECT {FIRING_COLS} FROM firings WHERE state = 'committed' AND lane = ?"
                " AND catchup = ? AND id BETWEEN ? AND ? ORDER BY id LIMIT ?",
                (lane, int(catchup), first_id, last_id, limit),
            )
            return [firing_row(r) for r in rows]

        return await self._write(unit)

    async def ready_spans(self) -> list[ReadySpan]:
        rows = await self._read(
            "SELECT lane, catchup, min(id), max(id), count(*) FROM firings"
            " WHERE state = 'committed' GROUP BY lane, catchup"
        )
        return [ReadySpan(r[0], bool(r[1]), r[2], r[3], r[4]) for r in rows]

    async def committed_by_schedule(self) -> dict[int, int]:
        """Committed firings per schedule: the overlap counts of work not yet in memory."""
        rows = await self._read(
            "SELECT schedule_id, count(*) FROM firings"
            " WHERE state = 'committed' AND schedule_id IS NOT NULL GROUP BY schedule_id"
        )
        return {int(r[0]): int(r[1]) for r in rows}

    async def catchup_backlog(self) -> int:
        """Catch-up firings committed and not started: what the drain has still to release."""
        rows = await self._read(
            "SELECT count(*) FROM firings WHERE state = 'committed' AND catchup = 1"
        )
        return int(rows[0][0])
