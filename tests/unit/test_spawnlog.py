"""The spawn journal: what a crashed daemon left behind is read back, and the file stays small."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedd import spawnlog
from schedd.spawnlog import SpawnJournal
from schedd.workers.procs import ProcessIdentity


def test_spawns_survive_a_crash_and_a_fresh_start_forgets_them(tmp_path: Path) -> None:
    path = tmp_path / "schedd.db.spawns"
    first = SpawnJournal(path)
    assert first.leftovers() == []
    first.start()
    a, b = ProcessIdentity(100, 100, 7), ProcessIdentity(200, 200, 9)
    first.spawned(a)
    first.spawned(b)
    first.recorded(a)  # the store knows a now; the file still lists it until compaction
    # The daemon dies here (no close): a new one reads both, and also if it dies again first.
    assert SpawnJournal(path).leftovers() == [a, b]
    again = SpawnJournal(path)
    assert again.leftovers() == [a, b]
    again.start()
    assert SpawnJournal(path).leftovers() == []
    again.close()


def test_the_file_is_compacted_to_the_spawns_the_store_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spawnlog, "COMPACT_BYTES", 100)
    journal = SpawnJournal(tmp_path / "s.spawns")
    journal.start()
    pending = ProcessIdentity(1, 1, 1)
    journal.spawned(pending)
    for pid in range(2, 40):
        ident = ProcessIdentity(pid, pid, pid)
        journal.spawned(ident)
        journal.recorded(ident)
    assert (tmp_path / "s.spawns").stat().st_size < 200
    assert pending in SpawnJournal(tmp_path / "s.spawns").leftovers()
    journal.close()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.spawns"
    path.write_text("10 10 5\n11 1")
    assert SpawnJournal(path).leftovers() == [ProcessIdentity(10, 10, 5)]


def test_a_pool_worker_is_written_once_and_kept_while_any_of_its_runs_is_unrecorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spawnlog, "COMPACT_BYTES", 100)
    path = tmp_path / "s.spawns"
    journal = SpawnJournal(path)
    journal.start()
    worker = ProcessIdentity(5, 5, 50)
    for _ in range(3):  # three runs handed to one worker
        journal.spawned(worker)
    assert path.read_text() == "5 5 50\n"
    journal.recorded(worker)  # the first run's row; the other two are still being written
    journal.recorded(worker)
    for pid in range(10, 40):  # commands, past the compaction size
        ident = ProcessIdentity(pid, pid, pid)
        journal.spawned(ident)
        journal.recorded(ident)
    left = SpawnJournal(path).leftovers()
    assert len(left) < 30, "compacted"
    assert left.count(worker) == 1, "the worker kept: one of its runs is unrecorded"
    journal.recorded(worker)
    journal.spawned(worker)  # written again only if compaction dropped it: it did not
    assert SpawnJournal(path).leftovers().count(worker) == 1
    journal.close()
