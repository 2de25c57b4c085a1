"""The admin socket against hostile and careless clients, on the real daemon.

* Permissions, as other uids: ``schedctl`` is run under ``setpriv`` with the uid, gid and groups
  of a reader, a stranger and operators, against a socket everyone may connect to (``0666``), so
  only the daemon's role check stands between them and the operations.
* Load: 50 clients (requests, malformed and oversized lines, idle connections, churn) while a
  200 ms schedule runs; every run of it must still start within 100 ms of its time.
* Fuzz: random bytes and random JSON thrown at one daemon; every answer is a well-formed line
  with a known error code, or the connection is closed, and the daemon lives.

Nothing here sleeps to synchronize: the load runs until the daemon reports enough firings done
(``wait``), idle clients wait for the daemon to close them, and timing is read from the runs'
recorded start times afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import json
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedd import errors
from schedd.admin.client import AdminClient
from schedd.cli import exitcodes
from schedd.keys import parse_instant
from tests.integration.conftest import Daemon, base_config

KNOWN_CODES = frozenset(exitcodes.BY_CODE)
CLIENT_TIMEOUT_S = 20

# ------------------------------------------------------------------------------------------------
# Raw clients


def connect(sock: socket.socket, path: Path) -> None:
    """Connect as a patient client: a full listen backlog is waited out, not an error (EAGAIN)."""
    sock.connect(os.fspath(path))
    sock.settimeout(CLIENT_TIMEOUT_S)


def exchange(path: Path, payload: bytes) -> list[bytes] | None:
    """Send ``payload``, shut down the sending side, and read every answer until the daemon
    closes; None if the daemon reset the connection instead (allowed: "or was closed")."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        connect(sock, path)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it closed early (an oversized line, or too many connections): read what it said
        data = bytearray()
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            return None
    assert data == b"" or data.endswith(b"\n"), f"an answer was cut off: {bytes(data[-200:])!r}"
    return bytes(data).splitlines()


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def answer_problem(line: bytes) -> str | None:
    """Why ``line`` is not a well-formed answer (strict JSON, ok + result or a known error)."""
    try:
        message = json.loads(line, parse_constant=_not_json)
    except ValueError as exc:
        return f"not strict JSON ({exc}): {line[:200]!r}"
    if not isinstance(message, dict) or set(message) not in (
        {"id", "ok", "result"},
        {"id", "ok", "error"},
    ):
        return f"not an answer envelope: {line[:200]!r}"
    if message["ok"] is not ("result" in message):
        return f"ok does not match the body: {line[:200]!r}"
    if not message["ok"]:
        error = message["error"]
        if not isinstance(error, dict) or set(error) != {"code", "message"}:
            return f"malformed error: {line[:200]!r}"
        if error["code"] not in KNOWN_CODES or not isinstance(error["message"], str):
            return f"unknown error code: {line[:200]!r}"
    return None


def read_line(sock: socket.socket) -> bytes:
    """One answer line (the daemon sends nothing unasked, so no bytes are read past it)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, f"the daemon closed the connection after {data!r}"
        data += chunk
    return data


def outcome(line: bytes) -> str:
    """``"ok"`` or the error code of a well-formed answer line."""
    message = json.loads(line)
    return "ok" if message["ok"] else str(message["error"]["code"])


# ------------------------------------------------------------------------------------------------
# a. Permissions, as other uids


@dataclass(frozen=True)
class As:
    """Who a client runs as: ``setpriv`` arguments and a label for failure messages."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def setpriv(self) -> list[str]:
        groups = (
            [f"--groups={','.join(map(str, self.groups))}"] if self.groups else ["--clear-groups"]
        )
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", *groups]


#: nobody, and an id no ordinary host has a user or group for.
NOBODY = As(65534, 65534)
STRANGER = As(54321, 54321)


def ctl_as(d: Daemon, who: As, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*who.setpriv(), sys.executable, "-m", "schedd.cli.schedctl", "--socket", str(d.socket)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, cwd="/")


def member_of_a_secondary_group() -> tuple[pwd.struct_passwd, grp.struct_group] | None:
    """A user listed as a member of a group other than its primary one, in the group database."""
    for group in grp.getgrall():
        for name in group.gr_mem:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            if user.pw_uid not in (0, os.getuid()) and user.pw_gid != group.gr_gid:
                return user, group
    return None


def a_group_other_than(*gids: int) -> grp.struct_group:
    return next(g for g in grp.getgrall() if g.gr_gid not in {0, os.getgid(), *gids})


@pytest.fixture
def other_uids() -> None:
    """Skip unless this test can run clients as other uids."""
    if os.geteuid() != 0:
        pytest.skip("running clients as other uids needs root (setpriv --reuid)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = subprocess.run(
        [*NOBODY.setpriv(), sys.executable, "-c", "import schedd.cli.schedctl"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    if probe.returncode != 0:
        pytest.skip(f"this Python cannot run as uid {NOBODY.uid}: {probe.stderr.strip()[-300:]}")


def guarded_daemon(
    daemon_factory: Callable[[str], Daemon], workdir: Path, readers: str, operators: str
) -> Daemon:
    """A daemon whose socket every local user can connect to: only its roles guard it."""
    workdir.chmod(0o755)  # mkdtemp made it 0700; the socket file's 0666 is the only fence left
    d = daemon_factory(
        base_config(f'[admin]\nmode = "0666"\nreaders = {readers}\noperators = {operators}\n')
    )
    d.start()
    return d


def assert_denied_by_the_daemon(result: subprocess.CompletedProcess[str], who: As) -> None:
    assert result.returncode == exitcodes.PERMISSION_DENIED, (who, result.stdout, result.stderr)
    # Not EACCES in connect() (the client's own permission_denied): the daemon answered.
    assert "connecting to" not in result.stderr, result.stderr
    assert re.search(rf"uid\W*{who.uid}\b", result.stderr), result.stderr


@pytest.mark.usefixtures("other_uids")
def test_a_reader_may_read_but_not_change_and_a_stranger_may_do_nothing(
    daemon_factory: Any, workdir: Path
) -> None:
    d = guarded_daemon(daemon_factory, workdir, f'["uid:{NOBODY.uid}"]', "[]")

    status = ctl_as(d, NOBODY, "status", "--json")
    assert status.returncode == 0, (status.stdout, status.stderr, d.logs())
    assert json.loads(status.stdout)["pid"] == d.proc.pid  # type: ignore[union-attr]
    assert_denied_by_the_daemon(ctl_as(d, NOBODY, "dlq", "purge", "--all"), NOBODY)

    assert_denied_by_the_daemon(ctl_as(d, STRANGER, "status"), STRANGER)
    assert_denied_by_the_daemon(ctl_as(d, STRANGER, "dlq", "purge", "--all"), STRANGER)
    # root, the daemon's own uid, is an operator without an entry.
    assert d.ctl("dlq", "purge", "--all").returncode == 0


@pytest.mark.usefixtures("other_uids")
def test_an_operator_by_group_membership_may_change_state(
    daemon_factory: Any, workdir: Path
) -> None:
    found = member_of_a_secondary_group()
    if found is None:
        pytest.skip("no user on this host is a member of a group other than its primary one")
    user, group = found
    member = As(user.pw_uid, user.pw_gid)  # no supplementary groups in the process itself
    d = guarded_daemon(daemon_factory, workdir, "[]", f'["group:{group.gr_name}"]')

    purged = ctl_as(d, member, "dlq", "purge", "--all", "--json")
    assert purged.returncode == 0, (user.pw_name, group.gr_name, purged.stderr, d.logs())
    assert json.loads(purged.stdout) == {"purged": 0}
    logged = [line for line in d.logs().splitlines() if "dlq.purge" in line]
    assert any(re.search(rf"uid\W*{user.pw_uid}\b", line) for line in logged), logged
    # The group database decides, not the process's own supplementary groups (see
    # docs/configuration.md): a process that merely carries the gid is still a stranger.
    carrier = As(STRANGER.uid, STRANGER.gid, groups=(group.gr_gid,))
    assert_denied_by_the_daemon(ctl_as(d, carrier, "status"), carrier)


@pytest.mark.usefixtures("other_uids")
def test_an_operator_by_primary_group_may_change_state(daemon_factory: Any, workdir: Path) -> None:
    group = a_group_other_than(STRANGER.gid)
    d = guarded_daemon(daemon_factory, workdir, "[]", f'["group:{group.gr_name}"]')

    member = As(STRANGER.uid, group.gr_gid)
    purged = ctl_as(d, member, "dlq", "purge", "--all", "--json")
    assert purged.returncode == 0, (group.gr_name, purged.stderr, d.logs())
    assert json.loads(purged.stdout) == {"purged": 0}
    assert_denied_by_the_daemon(ctl_as(d, STRANGER, "dlq", "purge", "--all"), STRANGER)


# ------------------------------------------------------------------------------------------------
# b. 50 clients at once, while a 200 ms schedule keeps its time

PULSE = """
[schedules.pulse]
every = "200ms"
jitter = "0s"
command = ["/bin/true"]
"""
MAX_CONNECTIONS = 40
MAX_REQUEST = 4096
IDLERS, CHURNERS, REQUESTERS = 10, 5, 35
PULSES_UNDER_LOAD = 15


class Load:
    """What the clients saw: answer outcomes by kind, and anything malformed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.problems: list[str] = []

    def record(self, kind: str, lines: list[bytes] | None, expected: int) -> None:
        """Answers to ``expected`` requests: one each, or a single refusal, or a reset."""
        if lines is None:
            outcomes = ["reset"]
            found = []
        else:
            found = [p for line in lines if (p := answer_problem(line))]
            outcomes = [] if found else [outcome(line) for line in lines]
            refused = outcomes in (["unavailable"], ["too_large"])
            if not found and len(lines) != expected and not refused:
                found.append(f"{kind}: {len(lines)} answers to {expected} requests: {lines!r}")
        with self.lock:
            self.problems += found
            self.seen.update(f"{kind}:{o}" for o in outcomes)

    def run(self, client: Callable[[Load, random.Random], None], seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not self.stop.is_set():
                client(self, rng)
        except (OSError, AssertionError, ValueError) as exc:  # reported, not lost in a thread
            with self.lock:
                self.problems.append(f"{client.__name__} raised {exc!r}")


def idler(load: Load, rng: random.Random) -> None:
    """Connect, send nothing, and wait for the daemon's idle timeout to close the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        connect(sock, load.path)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                data += chunk
    load.record("idle", data.splitlines(), 0)


def churner(load: Load, rng: random.Random) -> None:
    """Connect and hang up at once, sometimes halfway through a request."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(os.fspath(load.path))
        if rng.random() < 0.5:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused: the cap
                sock.send(b'{"id": 1, "op": "sta')
    with load.lock:
        load.seen["churn"] += 1


def requester(load: Load, rng: random.Random) -> None:
    kind = rng.choice(["status", "list", "malformed", "oversized", "pipelined"])
    if kind == "status":
        payload = b'{"id": 1, "op": "status"}\n'
    elif kind == "list":
        payload = b'{"id": "l", "op": "schedules.list", "args": {"limit": 5}}\n'
    elif kind == "malformed":
        payload = rng.choice([b'{"op": [}\n', b"\xff\xfe\n", b'{"op": "status", "op": 1}\n'])
    elif kind == "oversized":
        payload = b'{"op": "status", "args": {"x": "' + b"a" * (2 * MAX_REQUEST) + b'"}}\n'
    else:
        payload = b"".join(
            b'{"id": %d, "op": "%s"}\n' % (i, op)
            for i, op in enumerate([b"status", b"schedules.list", b"runs.list"], 1)
        )
    lines = exchange(load.path, payload)
    expected = payload.count(b"\n")
    load.record(kind, lines, expected)
    if kind == "pipelined" and lines is not None and len(lines) == expected:
        ids = [json.loads(line)["id"] for line in lines]
        if ids != [1, 2, 3]:
            with load.lock:
                load.problems.append(f"pipelined answers out of order: {ids}")


def scheduled_for_ms(run: dict[str, Any]) -> int:
    return parse_instant(run["key"].split("@", 1)[1])


def test_fifty_clients_neither_break_the_socket_nor_delay_a_200ms_schedule(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(
        base_config(
            f'[admin]\nmax_connections = {MAX_CONNECTIONS}\nidle_timeout = "2s"\n'
            f"max_request_size = {MAX_REQUEST}\n{PULSE}"
        )
    )
    d.start()
    load = Load(d.socket)
    with AdminClient(d.socket, timeout_s=CLIENT_TIMEOUT_S) as main:
        # The cap, deterministically: fill every slot (this client holds one), then one more.
        held = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(MAX_CONNECTIONS)]
        try:
            before = main.call("wait", {"schedule": "pulse", "timeout_ms": 0})["finished"]
            for sock in held[:-1]:
                connect(sock, d.socket)
                sock.sendall(b'{"op": "status"}\n')
                assert outcome(read_line(sock)) == "ok"
            connect(held[-1], d.socket)
            refused = read_line(held[-1])
            assert outcome(refused) == "unavailable", refused
        finally:
            for sock in held:
                sock.close()

        clients = [idler] * IDLERS + [churner] * CHURNERS + [requester] * REQUESTERS
        threads = [
            threading.Thread(target=load.run, args=(client, seed), daemon=True)
            for seed, client in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        try:
            done = wait_under_load(main, before + PULSES_UNDER_LOAD)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(CLIENT_TIMEOUT_S + 5)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert done, d.logs()[-3000:]
    assert load.problems == [], load.problems[:10]
    for kind in ("status:ok", "list:ok", "pipelined:ok", "malformed:invalid_argument"):
        assert load.seen[kind] > 0, (kind, load.seen)
    assert load.seen["oversized:too_large"] > 0, load.seen

    runs = d.call("runs.list", schedule="pulse", limit=1000)["runs"]
    times = sorted(scheduled_for_ms(r) for r in runs)
    assert len(times) >= PULSES_UNDER_LOAD, f"{len(times)} runs: occurrences were skipped"
    # One run per occurrence: none was skipped as "overlap: previous run still going".
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {200}, sorted(times)
    late = [parse_instant(r["started_at"]) - scheduled_for_ms(r) for r in runs]
    assert min(late) >= 0, "never early"
    assert max(late) <= 100, f"pulse runs were late by up to {max(late)} ms under load: {late}"
    assert d.call("status")["pid"] == d.proc.pid  # type: ignore[union-attr]
    logs = d.logs()
    assert "admin connection refused" in logs
    for sign in ("Traceback", "Exception in callback", "exception was never retrieved"):
        assert sign not in logs, logs[logs.index(sign) - 2000 :][:4000]


def wait_under_load(client: AdminClient, count: int) -> bool:
    """``wait`` for ``count`` finished pulses; the cap may refuse the (re)connection: ask again."""
    while True:
        try:
            result = client.call(
                "wait", {"schedule": "pulse", "count": count, "timeout_ms": 60_000}
            )
        except errors.Unavailable as exc:
            if "too many admin connections" not in str(exc):
                raise
            continue
        return bool(result["done"])


# ------------------------------------------------------------------------------------------------
# c. Fuzz

#: Every op of docs/admin-protocol.md and issue 4; the mutating ones included, since only the
#: daemon's liveness and the answers' shape are checked.
OPS = [
    "status",
    "schedules.list",
    "schedules.show",
    "schedules.add",
    "schedules.remove",
    "schedules.pause",
    "schedules.resume",
    "schedules.trigger",
    "schedules.backfill",
    "submit",
    "runs.list",
    "runs.show",
    "firings.show",
    "firings.remove",
    "backlog",
    "wait",
    "reload",
    "dlq.list",
    "dlq.show",
    "dlq.retry",
    "dlq.purge",
]
ARG_KEYS = [
    "name", "key", "id", "limit", "after", "before", "schedule", "states", "count", "timeout_ms",
    "min_attempt", "next", "all", "older_than_ms", "from", "to", "dry_run", "match", "top",
    "since", "lane", "at", "spec", "task", "paused",
]  # fmt: skip
FUZZ_MAX_REQUEST = 16 * 1024

text = st.text(
    st.characters(codec="utf-8") | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    max_size=6,
)
names = st.sampled_from(["tick", "tick@2026-01-01T00:00:00.000Z", "nope", ""]) | text
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and the infinities go out as raw text, as json.dumps writes them
    | names,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


#: No instants: a backfill over a plausible range would queue thousands of runs.
plausible = st.sampled_from(
    ["tick", "nope", "tick@2026-01-01T00:00:00.000Z", "default", ["dead"], ["bogus"], True, False]
) | st.sampled_from([0, 1, 5, 100, 2**62, -1])


@st.composite
def real_request(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(OPS))
    args = draw(
        st.dictionaries(st.sampled_from(ARG_KEYS) | text, json_values, max_size=4)
        # Well-typed values under real keys get past validation into the operations.
        | st.dictionaries(st.sampled_from(ARG_KEYS), plausible, max_size=2)
    )
    if op == "wait":
        args["timeout_ms"] = 0  # a valid wait blocks until its timeout
    request_id = draw(st.none() | st.integers(-(2**70), 2**70) | text | st.booleans())
    return {"id": request_id, "op": op, "args": args}


def encoded(envelope: object, ascii_only: bool) -> bytes:
    """JSON as Python writes it: NaN as raw text, and lone surrogates either escaped or raw
    (``surrogatepass`` makes bytes that are not UTF-8)."""
    return json.dumps(envelope, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def nested(depth: int) -> bytes:
    return b'{"op": "status", "args": {"a": %s%s}}' % (b"[" * depth, b"]" * depth)


def huge_int(zeros: int) -> bytes:
    return b'{"op": "runs.show", "args": {"id": 1%s}}' % (b"0" * zeros)


chaos = st.one_of(
    st.binary(max_size=300),
    st.builds(
        encoded,
        st.dictionaries(st.sampled_from(["id", "op", "args"]) | text, json_values),
        st.booleans(),
    ),
    st.builds(encoded, json_values, st.booleans()),
    st.integers(60, 5000).map(nested),
    st.integers(19, 6000).map(huge_int),
    st.sampled_from([b'{"op": "status", "args": {"x": NaN}}', b'{"op": "x\\ud800"}']),
    st.integers(FUZZ_MAX_REQUEST + 1, 4 * FUZZ_MAX_REQUEST).map(lambda n: b"x" * n),
)
real = st.builds(encoded, real_request(), st.booleans())
#: Half real operations, half anything at all (``|`` would flatten into eight equal branches).
one_line = st.booleans().flatmap(lambda is_real: real if is_real else chaos)


def test_random_bytes_and_json_get_well_formed_answers_and_the_daemon_lives(
    daemon_factory: Any,
) -> None:
    tick = '[schedules.tick]\nevery = "1h"\ncommand = ["/bin/true"]\n'
    d: Daemon = daemon_factory(
        base_config(f"[admin]\nmax_request_size = {FUZZ_MAX_REQUEST}\n{tick}")
    )
    proc = d.start()
    codes: Counter[str] = Counter()

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(one_line, min_size=1, max_size=4))
    def throw(lines: list[bytes]) -> None:
        answers = exchange(d.socket, b"\n".join(lines) + b"\n")
        assert proc.poll() is None, d.logs()[-3000:]
        if answers is None:
            return
        for line in answers:
            problem = answer_problem(line)
            assert problem is None, problem
            codes[outcome(line)] += 1
        assert len(answers) <= sum(1 for line in b"\n".join(lines).split(b"\n") if line.strip())

    throw()
    assert d.call("status")["pid"] == proc.pid
    assert codes["internal"] == 0, f"{codes}; see the daemon log:\n{d.logs()[-5000:]}"
    assert "Traceback" not in d.logs(), d.logs()[-5000:]
    assert codes["ok"] > 0, codes
    assert codes["invalid_argument"] > 0, codes
