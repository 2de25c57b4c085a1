"""The bounded tail of a run's output.

A run's output is stored with the run (DESIGN §6), but only its tail: the end of the output is
where the error is, and a task that prints 10 GB must not cost the daemon 10 GB (the RQ incident
in DESIGN's preamble was exactly "load everything, then run out of memory").

``OutputTail`` is a ring buffer over a ``bytearray`` that grows as output arrives and stops at
``limit`` bytes, so a silent task costs nothing and a chatty one costs ``limit``. Once full, each
chunk overwrites the oldest bytes in place: at most two slice copies per chunk, no per-chunk
allocation, and a chunk longer than the whole tail is cut to its last ``limit`` bytes before it is
copied. The alternative, appending and deleting from the front, is amortised O(1) in CPython but
keeps up to twice the limit alive and relies on an implementation detail of ``bytearray``.

Bytes, not text: the tail may begin in the middle of a UTF-8 sequence or a line, and whoever
renders it decides how to decode; ``truncated`` says that the beginning is missing.
"""

from __future__ import annotations

from schedd.errors import InvalidArgument


class OutputTail:
    """The last ``limit`` bytes fed to it, in O(limit) memory whatever the total."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise InvalidArgument(f"output tail limit must be >= 0 bytes, got {limit}")
        self._limit = limit
        self._buf = bytearray()
        #: Index of the oldest byte once the buffer is full (where the next byte goes).
        self._start = 0
        self._total = 0

    def feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        if self._limit == 0 or not chunk:
            return
        view = memoryview(chunk)[-self._limit :]
        room = self._limit - len(self._buf)
        if room > 0:
            self._buf += view[:room]
            view = view[room:]
        if not view:
            return
        # Full: overwrite the oldest bytes, wrapping around the end of the buffer.
        first = min(len(view), self._limit - self._start)
        self._buf[self._start : self._start + first] = view[:first]
        self._buf[: len(view) - first] = view[first:]
        self._start = (self._start + len(view)) % self._limit

    @property
    def total_bytes(self) -> int:
        """Everything ever fed, kept or not."""
        return self._total

    @property
    def truncated(self) -> bool:
        """Whether the beginning of the output was dropped."""
        return self._total > self._limit

    def getvalue(self) -> bytes:
        return bytes(self._buf[self._start :] + self._buf[: self._start])
