"""What every mixin of the SQLite store needs from the class it is mixed into.

:class:`~schedd.store.sqlite.SqliteStore` owns the connections; each mixin (schedules, intake,
firings, backlog) holds one part of the contract and reaches the database only through these
methods, so no mixin can bypass the group-committing writer or write on the reader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from schedd.store.writer import Conn

T = TypeVar("T")


class StoreMixin:
    async def _write(self, unit: Callable[[Conn], Awaitable[T]], *, behind: bool = False) -> T:
        """Run ``unit`` in the next group-committed write transaction; ``behind``: a record
        nobody waits for, batched after the others (see :mod:`schedd.store.writer`)."""
        raise NotImplementedError

    async def _behind_room(self) -> None:
        """Wait until the writer takes more units written behind."""
        raise NotImplementedError

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One query on the read-only connection, as its own short transaction."""
        raise NotImplementedError

    def _peek(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One lookup by primary key, run inline on the loop's thread: microseconds of SQLite
        against a thread round trip for :meth:`_read`. Never a scan: it blocks the loop."""
        raise NotImplementedError
