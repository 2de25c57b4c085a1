"""OutputTail: the last ``limit`` bytes, in bounded memory."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedd.errors import InvalidArgument
from schedd.workers.output import OutputTail


@given(
    limit=st.integers(min_value=0, max_value=64),
    chunks=st.lists(st.binary(max_size=100), max_size=30),
)
def test_tail_is_the_end_of_everything_fed(limit: int, chunks: list[bytes]) -> None:
    tail = OutputTail(limit)
    for chunk in chunks:
        tail.feed(chunk)
    everything = b"".join(chunks)
    assert tail.getvalue() == (everything[-limit:] if limit else b"")
    assert tail.total_bytes == len(everything)
    assert tail.truncated == (len(everything) > limit)


def test_tail_keeps_exactly_limit_bytes_at_the_boundary() -> None:
    tail = OutputTail(4)
    tail.feed(b"ab")
    tail.feed(b"cd")
    assert (tail.getvalue(), tail.truncated) == (b"abcd", False)
    tail.feed(b"e")
    assert (tail.getvalue(), tail.truncated) == (b"bcde", True)


def test_chunk_larger_than_the_tail_keeps_its_own_end() -> None:
    tail = OutputTail(3)
    tail.feed(b"x")
    tail.feed(b"0123456789")
    assert tail.getvalue() == b"789"


def test_memory_stays_bounded_whatever_is_written() -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB, reused: only the tail's own memory is measured
    tail = OutputTail(4096)
    tracemalloc.start()
    try:
        for _ in range(800):  # 50 MiB in total
            tail.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tail.total_bytes == 800 * len(chunk)
    assert tail.getvalue() == chunk[-4096:]
    assert peak < 64 * 1024


def test_negative_limit_is_rejected_by_name() -> None:
    with pytest.raises(InvalidArgument, match="output tail limit"):
        OutputTail(-1)
