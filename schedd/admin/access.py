"""Who may do what on the admin socket: a role per peer, from ``[admin] readers`` / ``operators``.

The socket's mode and group decide who can *connect*; this module decides what a connected peer
may *do*, from the credentials the kernel vouches for (``SO_PEERCRED``), never from anything the
client says about itself. ``root`` and the daemon's own uid are always operators (they can open
the database directly anyway); everyone else needs an entry, and a peer with none gets no role.

Entries are ``"NAME"`` (a user), ``"uid:N"``, ``"group:NAME"`` and ``"gid:N"``. Names are
resolved to ids once, at construction, and the config loader resolves them too
(:func:`resolve_entry`), so a misspelt name fails the file instead of silently locking an
operator out or letting nobody in. Numeric ids need not exist in the user database: containers
and NFS hosts run processes with ids that have no name.

A peer is in a group if the group is its primary gid (from ``SO_PEERCRED``) or one of its
user's groups in the group database (``getgrouplist``). The latter goes through NSS, which may
be LDAP or sssd and take seconds, on the event loop; so a peer's role is cached per
``(uid, gid)`` for ``cache_ms``, and NSS is not asked at all when no entry names a group. A uid
with no user-database entry has no supplementary groups to look up: it matches by its uid and
its primary gid alone.
"""

from __future__ import annotations

import enum
import grp
import json
import logging
import os
import pwd
import re
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from schedd import errors
from schedd.admin.protocol import Peer
from schedd.clock import Clock

if TYPE_CHECKING:
    from schedd.config import AdminConfig

log = logging.getLogger("schedd.admin")

#: ``(uid_t) -1`` means "no id" to the kernel (``chown(path, -1, gid)``), so it is not an id.
MAX_ID = 2**32 - 2
#: A bound on the role cache, so a flood of distinct (uid, gid) pairs cannot grow it forever.
_MAX_CACHED = 4096
_NAME = re.compile(r"[^\s:\x00]+")
_NUMBER = re.compile(r"[0-9]{1,10}")
_NUMERIC: dict[str, Literal["uid", "gid"]] = {"uid": "uid", "gid": "gid"}
_FORMS = '"NAME" (a user), "uid:N", "group:NAME" or "gid:N"'


class Role(enum.Enum):
    READER = "reader"
    OPERATOR = "operator"


def _uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _name_of(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@dataclass(frozen=True)
class Directory:
    """The host's user and group database (NSS), as a value, so tests need no real users."""

    uid_of: Callable[[str], int | None] = _uid_of
    gid_of: Callable[[str], int | None] = _gid_of
    name_of: Callable[[int], str | None] = _name_of
    #: ``(user name, primary gid)`` → every gid the user is in, the primary one included.
    groups_of: Callable[[str, int], Sequence[int]] = os.getgrouplist


SYSTEM = Directory()


@dataclass(frozen=True)
class Principal:
    """What an entry stands for once resolved: a uid, or a group's gid."""

    kind: Literal["uid", "gid"]
    id: int


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def group_id(name: str, directory: Directory = SYSTEM) -> int:
    """The gid of group ``name``; InvalidArgument if this host has no such group."""
    gid = directory.gid_of(name)
    if gid is None:
        raise errors.InvalidArgument(f"no group {_quote(name)} on this host")
    return gid


def resolve_entry(entry: str, directory: Directory = SYSTEM) -> Principal:
    """One readers/operators entry → the uid or gid it names.

    Raises :class:`~schedd.errors.InvalidArgument` for a malformed entry or a name this host
    does not know, with a message that shows the entry.
    """
    prefix, colon, rest = entry.partition(":")
    if not colon:
        name = _name(entry, "user")
        uid = directory.uid_of(name)
        if uid is None:
            raise errors.InvalidArgument(
                f'no user {_quote(name)} on this host (a uid without a name is written "uid:N")'
            )
        return Principal("uid", uid)
    if prefix == "group":
        return Principal("gid", group_id(_name(rest, "group"), directory))
    kind = _NUMERIC.get(prefix)
    if kind is not None:
        if not _NUMBER.fullmatch(rest) or int(rest) > MAX_ID:
            raise errors.InvalidArgument(
                f"{_quote(entry)}: expected {kind}:N with N a number from 0 to {MAX_ID}"
            )
        return Principal(kind, int(rest))
    raise errors.InvalidArgument(f"{_quote(entry)}: unknown form; an entry is {_FORMS}")


def _name(text: str, what: str) -> str:
    if not _NAME.fullmatch(text):
        raise errors.InvalidArgument(
            f"{_quote(text)} is not a {what} name (non-empty, no spaces or ':'); "
            f"an entry is {_FORMS}"
        )
    return text


@dataclass(frozen=True)
class _Grant:
    """The uids and gids one list of entries admits."""

    uids: frozenset[int]
    gids: frozenset[int]

    @classmethod
    def resolve(cls, entries: Sequence[str], key: str, directory: Directory) -> _Grant:
        uids: set[int] = set()
        gids: set[int] = set()
        for i, entry in enumerate(entries):
            try:
                principal = resolve_entry(entry, directory)
            except errors.InvalidArgument as exc:
                raise errors.InvalidArgument(f"admin.{key}[{i}]: {exc}") from None
            (uids if principal.kind == "uid" else gids).add(principal.id)
        return cls(frozenset(uids), frozenset(gids))

    def admits(self, uid: int, gids: Set[int]) -> bool:
        return uid in self.uids or not self.gids.isdisjoint(gids)


class Access:
    """The role of each peer; cheap to ask per request (see the module docstring)."""

    def __init__(
        self,
        readers: Sequence[str],
        operators: Sequence[str],
        *,
        daemon_uid: int,
        clock: Clock,
        cache_ms: int = 60_000,
        directory: Directory = SYSTEM,
    ) -> None:
        self._readers = _Grant.resolve(readers, "readers", directory)
        self._operators = _Grant.resolve(operators, "operators", directory)
        self._always = frozenset({0, daemon_uid})
        self._clock = clock
        self._cache_ms = cache_ms
        self._directory = directory
        self._needs_groups = bool(self._readers.gids or self._operators.gids)
        #: (uid, gid) → (role, monotonic ms until which it holds).
        self._cache: dict[tuple[int, int], tuple[Role | None, int]] = {}

    @classmethod
    def from_config(cls, admin: AdminConfig, *, daemon_uid: int, clock: Clock) -> Access:
        return cls(admin.readers, admin.operators, daemon_uid=daemon_uid, clock=clock)

    def role(self, peer: Peer) -> Role | None:
        """The peer's role; None for a stranger, who may do nothing."""
        if peer.uid in self._always:
            return Role.OPERATOR
        now = self._clock.monotonic_ms()
        key = (peer.uid, peer.gid)
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        role = self._look_up(peer.uid, peer.gid)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (role, now + self._cache_ms)
        return role

    def _look_up(self, uid: int, gid: int) -> Role | None:
        gids = self._groups(uid, gid)
        if self._operators.admits(uid, gids):
            return Role.OPERATOR
        if self._readers.admits(uid, gids):
            return Role.READER
        return None

    def _groups(self, uid: int, gid: int) -> frozenset[int]:
        if not self._needs_groups:
            return frozenset({gid})
        name = self._directory.name_of(uid)
        if name is None:
            return frozenset({gid})
        try:
            return frozenset({gid, *self._directory.groups_of(name, gid)})
        except OSError as exc:
            log.warning("cannot list the groups of user %r (uid %d): %s", name, uid, exc)
            return frozenset({gid})
