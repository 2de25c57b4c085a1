"""``@record`` keeps what a frozen dataclass promised its users at run time: value equality and
hashing (records are dict keys and set members), ``dataclasses.replace``, keyword-only fields
and defaults. Assignment is refused by mypy, not at run time (see :mod:`schedd.record`)."""

from __future__ import annotations

import dataclasses

from schedd.record import record
from schedd.store.records import Ticket
from schedd.workers.procs import ProcessIdentity


def ticket(firing_id: int = 7) -> Ticket:
    return Ticket(firing_id, "s@2026-11-24T00:00:00.000Z", 3, "s", 0, 1, 9, ready_ms=0)


def test_records_are_equal_and_hash_alike_by_value() -> None:
    assert ticket() == ticket()
    assert hash(ticket()) == hash(ticket())
    assert ticket(7) != ticket(8)
    seen = {ProcessIdentity(10, 10, 5): "a"}
    assert seen[ProcessIdentity(10, 10, 5)] == "a"
    assert ProcessIdentity(10, 10, 6) not in seen


def test_replace_defaults_and_keyword_only_fields_work_as_in_a_dataclass() -> None:
    moved = dataclasses.replace(ticket(), attempt=2)
    assert (moved.attempt, moved.firing_id, moved.lane, moved.catchup) == (2, 7, "default", False)


def test_a_record_has_slots_and_no_instance_dict() -> None:
    @record
    class Point:
        x: int
        y: int = 0

    p = Point(1)
    assert (p.x, p.y) == (1, 0)
    assert not hasattr(p, "__dict__")
