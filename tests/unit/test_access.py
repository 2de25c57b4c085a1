"""Roles on the admin socket: entries resolved once, groups from the database, a bounded cache.

The user database is a :class:`FakeDirectory` (no real users are needed, and every NSS call is
counted); a few tests use the host's own ``root``, which every Linux has.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from schedd import errors
from schedd.admin.access import MAX_ID, Access, Directory, Principal, Role, resolve_entry
from schedd.admin.protocol import Peer
from schedd.config import AdminConfig
from tests.fakes import FakeClock

DAEMON_UID = 990
CACHE_MS = 60_000


class FakeDirectory:
    """Users alice (1001, primary group 1001) and bob (1002); groups ops (50) and audit (60).

    alice is a member of ops in the group database; ``calls`` counts supplementary-group lookups.
    """

    def __init__(self) -> None:
        self.users = {"alice": 1001, "bob": 1002}
        self.groups = {"ops": 50, "audit": 60}
        self.members: dict[str, set[int]] = {"alice": {50}, "bob": set()}
        self.calls: list[tuple[str, int]] = []
        self.fail = False

    def groups_of(self, name: str, gid: int) -> Sequence[int]:
        self.calls.append((name, gid))
        if self.fail:
            raise OSError("NSS backend unreachable")
        return [gid, *sorted(self.members[name])]

    def directory(self) -> Directory:
        names = {uid: name for name, uid in self.users.items()}
        return Directory(
            uid_of=self.users.get,
            gid_of=self.groups.get,
            name_of=names.get,
            groups_of=self.groups_of,
        )


@pytest.fixture
def users() -> FakeDirectory:
    return FakeDirectory()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def access(
    users: FakeDirectory,
    clock: FakeClock,
    readers: Sequence[str] = (),
    operators: Sequence[str] = (),
) -> Access:
    return Access(
        readers,
        operators,
        daemon_uid=DAEMON_UID,
        clock=clock,
        cache_ms=CACHE_MS,
        directory=users.directory(),
    )


def peer(uid: int, gid: int | None = None) -> Peer:
    return Peer(pid=4242, uid=uid, gid=uid if gid is None else gid)


# --- who is what -------------------------------------------------------------------------------


def test_root_and_the_daemons_own_uid_are_operators_with_no_entries(
    users: FakeDirectory, clock: FakeClock
) -> None:
    a = access(users, clock)
    assert a.role(peer(0)) is Role.OPERATOR
    assert a.role(peer(DAEMON_UID, 12345)) is Role.OPERATOR
    assert a.role(peer(1001)) is None


def test_a_peer_with_no_entry_is_a_stranger(users: FakeDirectory, clock: FakeClock) -> None:
    a = access(users, clock, readers=["alice", "gid:60"], operators=["uid:7"])
    assert a.role(peer(1002)) is None


@pytest.mark.parametrize("entry", ["alice", "uid:1001"])
def test_a_reader_by_name_or_uid(users: FakeDirectory, clock: FakeClock, entry: str) -> None:
    a = access(users, clock, readers=[entry])
    assert a.role(peer(1001)) is Role.READER
    assert a.role(peer(1002)) is None


def test_an_operator_listed_as_reader_too_is_an_operator(
    users: FakeDirectory, clock: FakeClock
) -> None:
    a = access(users, clock, readers=["alice", "bob"], operators=["uid:1001"])
    assert a.role(peer(1001)) is Role.OPERATOR
    assert a.role(peer(1002)) is Role.READER


@pytest.mark.parametrize("entry", ["group:audit", "gid:60"])
def test_a_group_entry_matches_the_peers_primary_gid(
    users: FakeDirectory, clock: FakeClock, entry: str
) -> None:
    a = access(users, clock, operators=[entry])
    assert a.role(peer(1002, 60)) is Role.OPERATOR
    assert a.role(peer(1002, 61)) is None


@pytest.mark.parametrize("entry", ["group:ops", "gid:50"])
def test_a_group_entry_matches_the_users_supplementary_groups_in_the_database(
    users: FakeDirectory, clock: FakeClock, entry: str
) -> None:
    a = access(users, clock, readers=[entry])
    assert a.role(peer(1001)) is Role.READER  # alice is in ops
    assert a.role(peer(1002)) is None  # bob is not
    assert users.calls == [("alice", 1001), ("bob", 1002)]


def test_a_uid_without_a_user_entry_matches_by_uid_and_primary_gid_only(
    users: FakeDirectory, clock: FakeClock
) -> None:
    a = access(users, clock, readers=["uid:5000", "group:ops"], operators=["gid:60"])
    assert a.role(peer(5000, 5000)) is Role.READER
    assert a.role(peer(5001, 60)) is Role.OPERATOR
    assert a.role(peer(5001, 61)) is None
    assert users.calls == [], "no name, so no group database lookup"


def test_without_group_entries_the_group_database_is_never_asked(
    users: FakeDirectory, clock: FakeClock
) -> None:
    a = access(users, clock, readers=["alice"], operators=["uid:1002"])
    assert [a.role(peer(uid)) for uid in (1001, 1002, 1003)] == [Role.READER, Role.OPERATOR, None]
    assert users.calls == []


def test_a_failing_group_lookup_falls_back_to_the_primary_gid_and_logs(
    users: FakeDirectory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    users.fail = True
    a = access(users, clock, readers=["group:ops"], operators=["gid:1001"])
    with caplog.at_level(logging.WARNING, logger="schedd.admin"):
        assert a.role(peer(1001)) is Role.OPERATOR  # by its primary gid
        assert a.role(peer(1001, 7)) is None  # ops membership could not be read
    assert "cannot list the groups of user 'alice' (uid 1001)" in caplog.text


# --- the cache ---------------------------------------------------------------------------------


def test_the_role_is_cached_per_uid_and_gid_until_cache_ms_has_passed(
    users: FakeDirectory, clock: FakeClock
) -> None:
    a = access(users, clock, operators=["group:ops"])
    assert a.role(peer(1002)) is None
    users.members["bob"].add(50)  # an admin adds bob to ops
    clock.advance(CACHE_MS - 1)
    assert a.role(peer(1002)) is None, "still the cached answer"
    assert a.role(peer(1002, 70)) is Role.OPERATOR, "another primary gid is another entry"
    clock.advance(1)
    assert a.role(peer(1002)) is Role.OPERATOR
    assert users.calls == [("bob", 1002), ("bob", 70), ("bob", 1002)]


def test_a_removed_membership_is_dropped_after_cache_ms(
    users: FakeDirectory, clock: FakeClock
) -> None:
    a = access(users, clock, operators=["group:ops"])
    assert a.role(peer(1001)) is Role.OPERATOR
    users.members["alice"].clear()
    clock.advance(CACHE_MS)
    assert a.role(peer(1001)) is None


# --- construction ------------------------------------------------------------------------------


def test_names_are_resolved_once_at_construction(users: FakeDirectory, clock: FakeClock) -> None:
    a = access(users, clock, readers=["alice"], operators=["group:audit"])
    users.users["alice"] = 2001  # renumbered later: the daemon keeps what it resolved
    users.groups["audit"] = 61
    assert a.role(peer(1001)) is Role.READER
    assert a.role(peer(1002, 60)) is Role.OPERATOR


def test_an_unknown_name_fails_construction_naming_list_and_index(
    users: FakeDirectory, clock: FakeClock
) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        access(users, clock, readers=["alice"], operators=["bob", "group:opps"])
    assert str(caught.value) == 'admin.operators[1]: no group "opps" on this host'


def test_from_config_reads_both_lists(clock: FakeClock) -> None:
    admin = AdminConfig(socket=Path("/s"), readers=("uid:4000",), operators=("gid:4001",))
    a = Access.from_config(admin, daemon_uid=DAEMON_UID, clock=clock)
    assert a.role(peer(4000)) is Role.READER
    assert a.role(peer(5000, 4001)) is Role.OPERATOR
    assert a.role(peer(5000)) is None
    assert a.role(peer(DAEMON_UID)) is Role.OPERATOR


# --- entries -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("alice", Principal("uid", 1001)),
        ("uid:0", Principal("uid", 0)),
        ("uid:007", Principal("uid", 7)),
        (f"uid:{MAX_ID}", Principal("uid", MAX_ID)),
        ("group:ops", Principal("gid", 50)),
        ("gid:65534", Principal("gid", 65534)),
    ],
)
def test_each_entry_form_resolves_to_its_id(
    users: FakeDirectory, entry: str, expected: Principal
) -> None:
    assert resolve_entry(entry, users.directory()) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("carol", 'no user "carol" on this host (a uid without a name is written "uid:N")'),
        ("group:wheel", 'no group "wheel" on this host'),
        ("uid:", '"uid:": expected uid:N with N a number from 0 to 4294967294'),
        ("gid:-1", '"gid:-1": expected gid:N with N a number from 0 to 4294967294'),
        ("uid:4294967295", "expected uid:N with N a number from 0 to 4294967294"),
        ("uid:1e3", "expected uid:N"),
        ("uid:" + "9" * 40, "expected uid:N"),
        ("user:alice", '"user:alice": unknown form; an entry is "NAME" (a user), "uid:N"'),
        ("Group:ops", '"Group:ops": unknown form'),
        ("", "\"\" is not a user name (non-empty, no spaces or ':')"),
        ("group:", '"" is not a group name'),
        (" alice", '" alice" is not a user name'),
        ("al\x00ice", "is not a user name"),
        ("group:ops:x", '"ops:x" is not a group name'),
    ],
)
def test_a_malformed_or_unknown_entry_says_what_is_wrong(
    users: FakeDirectory, entry: str, message: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        resolve_entry(entry, users.directory())
    assert message in str(caught.value)


def test_the_hosts_database_resolves_root() -> None:
    assert resolve_entry("root") == Principal("uid", 0)
    assert resolve_entry("group:root") == Principal("gid", 0)
