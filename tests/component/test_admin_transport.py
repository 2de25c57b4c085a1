"""The admin transport over real Unix sockets: framing, envelope, limits, socket file, client.

Time is a FakeClock, so idle timeouts are exact; tests wait on events and on the socket itself
(a line, or EOF), never on sleeps.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import math
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedd import errors
from schedd.admin.client import AdminClient, error_for_code
from schedd.admin.protocol import (
    MAX_NESTING,
    Peer,
    Request,
    check_args,
    decode_request,
    decode_request_id,
    encode_response_error,
    encode_response_ok,
)
from schedd.admin.server import AdminServer
from tests.fakes import FakeClock

IDLE_MS = 1_000

# --------------------------------------------------------------------------------------------
# decode_request: the JSON traps, one table


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _req(args_json: str) -> bytes:
    return f'{{"id": 1, "op": "x", "args": {args_json}}}'.encode()


REJECTED = [
    pytest.param(b'{"op": "x"\xff}', "not valid UTF-8 (byte 0xff at offset 10)", id="invalid-utf8"),
    pytest.param(b"\xff\xfe{\x00}\x00", "not valid UTF-8", id="utf16-bom"),
    pytest.param(b"[" * 100_000, "nesting too deep", id="deep-brackets"),
    pytest.param(_req(f'{{"a": {_nested(MAX_NESTING)}}}'), "nesting too deep at args.a", id="deep"),
    pytest.param(_req('{"n": ' + "9" * 5000 + "}"), "does not fit in 64 bits", id="5000-digits"),
    pytest.param(_req('{"n": 1' + "0" * 5000 + "}"), "does not fit in 64 bits", id="10**5000"),
    pytest.param(_req(f'{{"n": {2**63}}}'), "integer 9223372036854775808 does not fit", id="2**63"),
    pytest.param(_req(f'{{"n": {-(2**63) - 1}}}'), "does not fit in 64 bits", id="-2**63-1"),
    pytest.param(_req('{"x": NaN}'), "NaN is not valid JSON", id="nan"),
    pytest.param(_req('{"x": [-Infinity]}'), "-Infinity is not valid JSON", id="-inf"),
    pytest.param(_req('{"x": 1e400}'), "number 1e400 is too large for a double", id="1e400"),
    pytest.param(_req('{"s": ["ok", "\\ud800"]}'), "args.s[1]: string contains a lone", id="surr"),
    pytest.param(_req('{"\\udfff": 1}'), "a key in args: string contains a lone", id="surr-key"),
    pytest.param(b'{"op": "\\ud800x"}', "op: string contains a lone surrogate", id="surr-op"),
    pytest.param(_req('{"s": {"t": "\\uDC00"}}'), "args.s.t: string contains a lone", id="surr-uc"),
    pytest.param(b"[1, 2]", "request must be a JSON object, got array", id="array"),
    pytest.param(b'"status"', "request must be a JSON object, got string", id="string"),
    pytest.param(b"42", "request must be a JSON object, got number", id="number"),
    pytest.param(b'{"id": true, "op": "x"}', "id: must be a string, an integer or null", id="id"),
    pytest.param(b'{"id": 1.5, "op": "x"}', "got number", id="id-float"),
    pytest.param(b'{"id": [1], "op": "x"}', "got array", id="id-array"),
    pytest.param(b'{"id": 1}', "op: missing", id="no-op"),
    pytest.param(b'{"op": 5}', "op: must be a string, got number", id="op-number"),
    pytest.param(b'{"op": null}', "op: must be a string, got null", id="op-null"),
    pytest.param(b'{"op": "x", "args": []}', "args: must be an object, got array", id="args"),
    pytest.param(b'{"op": "x", "arg": {}}', "unknown request key 'arg' (did you mean 'args'?)"),
    pytest.param(b'{"op": "status", "op": "purge"}', "duplicate key 'op'", id="dup-key"),
    pytest.param(b'{"op": "x", "args": {', "not valid JSON: Expecting", id="truncated"),
    pytest.param(b"", "not valid JSON", id="empty"),
]


@pytest.mark.parametrize(("line", "fragment"), REJECTED)
def test_decode_request_rejects_trap_with_message_naming_it(line: bytes, fragment: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        decode_request(line)
    assert fragment in str(caught.value)


def test_decode_request_fills_defaults_and_tolerates_line_endings() -> None:
    assert decode_request(b'{"op": "status"}\r\n') == Request(None, "status", {})
    assert decode_request(b'{"id": "a", "op": "x", "args": null}\n') == Request("a", "x", {})


def test_decode_request_accepts_int64_bounds_nesting_limit_and_real_unicode() -> None:
    args = (
        f'{{"lo": {-(2**63)}, "hi": {2**63 - 1}, "emoji": "\\ud83d\\ude00", "é": "ü", '
        f'"deep": {_nested(MAX_NESTING - 2)}}}'
    )
    request = decode_request(_req(args))
    assert request.args["lo"] == -(2**63)
    assert request.args["hi"] == 2**63 - 1
    assert request.args["emoji"] == "\U0001f600"
    assert request.args["é"] == "ü"


def test_decode_request_accepts_an_escaped_backslash_before_surrogate_like_text() -> None:
    assert decode_request(_req('{"path": "C:\\\\ud800"}')).args == {"path": "C:\\ud800"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"id": 7, "op": 5}', 7),
        (b'{"id": "a", "op": "x", "args": {"v": NaN}}', "a"),
        (b'{"id": "b", "op": "x", "args": {"n": 1' + b"0" * 30 + b"}}", "b"),
        (b'{"id": true, "op": "x"}', None),
        (b'{"id": "\\ud800", "op": 1}', None),
        (b"[" * 100_000, None),
        (b"\xff", None),
    ],
)
def test_decode_request_id_recovers_a_valid_id_from_a_refused_request(
    line: bytes, expected: object
) -> None:
    assert decode_request_id(line) == expected


def test_responses_are_single_lines_even_when_strings_contain_newlines() -> None:
    line = encode_response_ok("r1", {"text": "a\nb\u2028é"})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == {"id": "r1", "ok": True, "result": {"text": "a\nb\u2028é"}}


def test_error_response_survives_a_lone_surrogate_in_its_message() -> None:
    line = encode_response_error(3, errors.NotFound("schedule 'x\udc80' not found"))
    message = json.loads(line)
    assert message["id"] == 3
    assert message["ok"] is False
    assert message["error"]["code"] == "not_found"
    assert "\\udc80" in message["error"]["message"]


def test_check_args_names_unknown_key_with_suggestion_before_missing_one() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        check_args({"nmae": "x"}, required={"name"}, optional={"tenant"})
    assert str(caught.value) == (
        "unknown argument 'nmae' (did you mean 'name'?); accepted: name, tenant"
    )


def test_check_args_names_every_missing_argument() -> None:
    with pytest.raises(errors.InvalidArgument, match="missing required arguments 'a', 'b'"):
        check_args({"c": 1}, required={"a", "b", "c"})


def test_check_args_refuses_arguments_an_op_does_not_take() -> None:
    with pytest.raises(errors.InvalidArgument, match="unknown argument 'x'; accepted: none"):
        check_args({"x": 1})
    check_args({"name": "n"}, required={"name"}, optional={"tenant"})


# Surrogates are 2 048 of 1.1 million code points: ask for them explicitly or they never appear.
json_text = st.text(
    st.characters(codec="utf-8") | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    max_size=5,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=20,
)


def _assert_storable(value: object, depth: int = 1) -> None:
    """What SQLite and the encoder take: int64, finite floats, UTF-8 text, bounded nesting."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        assert -(2**63) <= value < 2**63
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, str):
        value.encode("utf-8")
    else:
        assert depth <= MAX_NESTING
        assert isinstance(value, dict | list)
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            _assert_storable(key, depth)
            _assert_storable(item, depth + 1)


def _assert_request_or_schedd_error(line: bytes) -> None:
    try:
        request = decode_request(line)
    except errors.ScheddError:
        return
    # What the boundary lets in must be storable and sendable back out.
    _assert_storable({"id": request.id, "op": request.op, "args": request.args})
    encode_response_ok(request.id, request.args).decode("utf-8")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_decode_request_on_random_bytes_returns_request_or_schedd_error(line: bytes) -> None:
    _assert_request_or_schedd_error(line)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_id=st.none() | st.integers(min_value=-(2**70), max_value=2**70) | json_text,
    op=json_text,
    args=st.dictionaries(json_text, json_values, max_size=4),
    bare=json_values,
)
def test_decode_request_on_random_json_returns_request_or_schedd_error(
    request_id: object, op: object, args: object, bare: object
) -> None:
    _assert_request_or_schedd_error(json.dumps(bare).encode())
    envelope = {"id": request_id, "op": op, "args": args}
    _assert_request_or_schedd_error(json.dumps(envelope).encode())
    raw = json.dumps(envelope, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _assert_request_or_schedd_error(raw)


# --------------------------------------------------------------------------------------------
# The server, over real sockets


class Ops:
    """A handler with one op per behaviour the transport must carry."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, request: Request, peer: Peer) -> Any:
        if request.op == "echo":
            return request.args
        if request.op == "peer":
            return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid}
        if request.op == "fail":
            raise error_for_code(request.args["code"], request.args["message"])
        if request.op == "boom":
            raise RuntimeError("handler bug")
        if request.op == "unencodable":
            return {"x": object()}
        if request.op == "slow":
            self.started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return "slow done"
        raise errors.InvalidArgument(f"op: unknown operation {request.op!r}")


class Raw:
    """A bare client on the event loop, to see exactly what the server writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> Raw:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        return cls(reader, writer)

    async def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> dict[str, Any] | None:
        """The next response, or None at EOF."""
        try:
            line = await self.reader.readline()
        except ConnectionResetError:
            return None
        if not line:
            return None
        assert line.endswith(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    async def call(self, message: dict[str, Any] | bytes) -> dict[str, Any] | None:
        await self.send(message)
        return await self.recv()

    async def close(self) -> None:
        self.writer.close()
        with suppress(BrokenPipeError, ConnectionResetError):
            await self.writer.wait_closed()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte AF_UNIX limit.
    path = Path(tempfile.mkdtemp(prefix="sa-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock_path(sock_dir: Path) -> Path:
    return sock_dir / "admin.sock"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ops() -> Ops:
    return Ops()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fails the test if anything reaches the loop's exception handler (an escaped exception)."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(None)
    assert seen == []


@pytest.fixture
def serve(sock_path: Path, ops: Ops, clock: FakeClock, loop_errors: list[dict[str, Any]]) -> Any:
    @asynccontextmanager
    async def start(**options: Any) -> AsyncIterator[AdminServer]:
        options.setdefault("idle_timeout_ms", IDLE_MS)
        async with AdminServer(sock_path, ops, clock=clock, **options) as server:
            yield server

    return start


def _error(message: dict[str, Any] | None) -> tuple[Any, str, str]:
    assert message is not None
    assert message["ok"] is False
    return message["id"], message["error"]["code"], message["error"]["message"]


async def test_round_trip_answers_with_the_request_id(serve: Any, sock_path: Path) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        for request_id in ("abc", 17, None):
            answer = await conn.call({"id": request_id, "op": "echo", "args": {"k": [1, "é"]}})
            assert answer == {"id": request_id, "ok": True, "result": {"k": [1, "é"]}}
        await conn.close()


async def test_handler_sees_the_connecting_process_credentials(serve: Any, sock_path: Path) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        answer = await conn.call({"id": 1, "op": "peer"})
        assert answer is not None
        assert answer["result"] == {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
        await conn.close()


@pytest.mark.parametrize("mode", [0o660, 0o600])
async def test_socket_file_gets_the_configured_mode_and_umask_is_restored(
    serve: Any, sock_path: Path, mode: int
) -> None:
    umask_before = os.umask(0o022)
    try:
        async with serve(mode=mode):
            st_mode = os.stat(sock_path).st_mode
            assert stat.S_ISSOCK(st_mode)
            assert stat.S_IMODE(st_mode) == mode
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(umask_before)


async def test_socket_file_gets_the_configured_group(serve: Any, sock_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    async with serve(group=group):
        assert os.stat(sock_path).st_gid == os.getgid()


async def test_unknown_group_is_refused_before_binding(serve: Any, sock_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument, match="group 'no-such-group-xyz' does not exist"):
        async with serve(group="no-such-group-xyz"):
            pass
    assert not _exists(sock_path)


async def test_close_removes_the_socket_file(serve: Any, sock_path: Path) -> None:
    async with serve():
        assert _exists(sock_path)
    assert not _exists(sock_path)


# Tiny synchronous file helpers (local files, instant; ruff's ASYNC240 wants them out of line).


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a crashed daemon leaves behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(os.fspath(path))


async def test_stale_socket_file_is_replaced(serve: Any, sock_path: Path) -> None:
    _stale_socket(sock_path)
    async with serve():
        conn = await Raw.open(sock_path)
        assert (await conn.call({"id": 1, "op": "echo"})) is not None
        await conn.close()


async def test_live_socket_is_not_stolen(
    serve: Any, sock_path: Path, ops: Ops, clock: FakeClock
) -> None:
    async with serve():
        second = AdminServer(sock_path, ops, clock=clock)
        with pytest.raises(errors.Unavailable, match=f"another daemon is listening on {sock_path}"):
            await second.start()
        conn = await Raw.open(sock_path)
        answer = await conn.call({"id": 1, "op": "echo"})
        assert answer is not None
        assert answer["ok"] is True
        await conn.close()


async def test_path_that_is_not_a_socket_is_never_replaced(serve: Any, sock_path: Path) -> None:
    _write(sock_path, b"precious")
    with pytest.raises(errors.Conflict, match="exists and is not a socket"):
        async with serve():
            pass
    assert _read(sock_path) == b"precious"


async def test_missing_parent_directory_is_reported_with_the_path(
    ops: Ops, clock: FakeClock, sock_dir: Path
) -> None:
    path = sock_dir / "missing" / "admin.sock"
    with pytest.raises(errors.Unavailable, match=f"cannot create admin socket {path}"):
        await AdminServer(path, ops, clock=clock).start()


async def test_socket_path_over_the_af_unix_limit_is_refused_naming_it(
    ops: Ops, clock: FakeClock, sock_dir: Path
) -> None:
    path = sock_dir / ("s" * 120)
    with pytest.raises(errors.InvalidArgument, match="over the 107-byte limit"):
        await AdminServer(path, ops, clock=clock).start()


async def test_close_leaves_alone_a_socket_that_replaced_ours(serve: Any, sock_path: Path) -> None:
    async with serve():
        os.unlink(sock_path)
        _stale_socket(sock_path)
        theirs = os.stat(sock_path).st_ino
    assert os.stat(sock_path).st_ino == theirs


async def test_malformed_line_gets_an_error_and_the_connection_stays_usable(
    serve: Any, sock_path: Path
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        _, code, message = _error(await conn.call(b"{not json\n"))
        assert code == "invalid_argument"
        assert "not valid JSON" in message
        request_id, code, message = _error(await conn.call(b'{"id": 9, "op": 1}\n'))
        assert (request_id, code) == (9, "invalid_argument")
        await conn.send(b"\n   \n")  # blank lines are not requests: no answer
        answer = await conn.call({"id": 10, "op": "echo", "args": {"a": 1}})
        assert answer == {"id": 10, "ok": True, "result": {"a": 1}}
        await conn.close()


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000 + b"\n",
        _req('{"n": 1' + "0" * 5000 + "}") + b"\n",
        _req('{"x": NaN}') + b"\n",
        _req('{"s": "\\ud800"}') + b"\n",
        b"[]\n",
        b'{"op": 5}\n',
    ],
)
async def test_json_traps_over_the_socket_answer_invalid_argument(
    serve: Any, sock_path: Path, line: bytes
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        assert _error(await conn.call(line))[1] == "invalid_argument"
        assert (await conn.call({"id": 2, "op": "echo"})) == {"id": 2, "ok": True, "result": {}}
        await conn.close()


async def test_unterminated_last_line_is_still_answered(serve: Any, sock_path: Path) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        await conn.send(b'{"id": 1, "op": "echo"}')
        conn.writer.write_eof()
        assert (await conn.recv()) == {"id": 1, "ok": True, "result": {}}
        assert (await conn.recv()) is None
        await conn.close()


async def test_oversized_line_is_answered_too_large_and_the_connection_closed(
    serve: Any, sock_path: Path
) -> None:
    async with serve(max_request_bytes=4096):
        conn = await Raw.open(sock_path)
        request_id, code, message = _error(await conn.call(b"x" * 10_000 + b"\n"))
        assert (request_id, code) == (None, "too_large")
        assert "max_request_bytes (4096 bytes)" in message
        assert (await conn.recv()) is None
        await conn.close()
        # Other clients are unaffected.
        other = await Raw.open(sock_path)
        assert (await other.call({"id": 1, "op": "echo"})) is not None
        await other.close()


async def test_line_of_exactly_max_request_bytes_is_accepted(serve: Any, sock_path: Path) -> None:
    head = b'{"id": 1, "op": "echo", "args": {"p": "'
    tail = b'"}}'
    line = head + b"a" * (4096 - len(head) - len(tail)) + tail
    assert len(line) == 4096
    async with serve(max_request_bytes=4096):
        conn = await Raw.open(sock_path)
        answer = await conn.call(line + b"\n")
        assert answer is not None
        assert answer["ok"] is True
        await conn.close()


@pytest.mark.parametrize(
    "code",
    ["not_found", "invalid_argument", "conflict", "permission_denied", "too_large", "unavailable"],
)
async def test_handler_error_is_answered_with_its_code_and_message(
    serve: Any, sock_path: Path, code: str
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        answer = await conn.call({"id": 4, "op": "fail", "args": {"code": code, "message": "m"}})
        assert answer == {"id": 4, "ok": False, "error": {"code": code, "message": "m"}}
        await conn.close()


@pytest.mark.parametrize("op", ["boom", "unencodable"])
async def test_unexpected_handler_failure_is_internal_logged_and_not_fatal(
    serve: Any, sock_path: Path, caplog: pytest.LogCaptureFixture, op: str
) -> None:
    caplog.set_level(logging.ERROR, logger="schedd.admin")
    async with serve():
        conn = await Raw.open(sock_path)
        answer = await conn.call({"id": 5, "op": op})
        assert answer == {
            "id": 5,
            "ok": False,
            "error": {"code": "internal", "message": "internal error; see the daemon log"},
        }
        assert (await conn.call({"id": 6, "op": "echo"})) == {"id": 6, "ok": True, "result": {}}
        await conn.close()
    [record] = [r for r in caplog.records if r.name == "schedd.admin"]
    assert record.exc_info is not None
    assert f"admin op {op!r}" in record.getMessage()


async def test_connections_over_the_cap_are_refused_and_a_freed_slot_is_reused(
    serve: Any, sock_path: Path
) -> None:
    async with serve(max_connections=2, max_request_bytes=1024):
        first, second = await Raw.open(sock_path), await Raw.open(sock_path)
        for conn in (first, second):  # both accepted and counted
            assert (await conn.call({"id": 1, "op": "echo"})) is not None
        third = await Raw.open(sock_path)
        request_id, code, message = _error(await third.recv())
        assert (request_id, code) == (None, "unavailable")
        assert "max_connections = 2" in message
        assert (await third.recv()) is None
        # The server closes `first` itself; its slot is free by the time we see the close.
        assert _error(await first.call(b"x" * 2000 + b"\n"))[1] == "too_large"
        assert (await first.recv()) is None
        fourth = await Raw.open(sock_path)
        assert (await fourth.call({"id": 2, "op": "echo"})) == {"id": 2, "ok": True, "result": {}}
        for conn in (first, second, third, fourth):
            await conn.close()


async def test_idle_connection_is_closed_at_the_idle_timeout_and_not_before(
    serve: Any, sock_path: Path, clock: FakeClock
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        assert (await conn.call({"id": 1, "op": "echo"})) is not None
        clock.advance(IDLE_MS - 1)
        assert (await conn.call({"id": 2, "op": "echo"})) is not None
        clock.advance(IDLE_MS)
        assert (await conn.recv()) is None
        await conn.close()


async def test_partial_line_does_not_keep_an_idle_connection_open(
    serve: Any, sock_path: Path, clock: FakeClock
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        assert (await conn.call({"id": 1, "op": "echo"})) is not None
        clock.advance(IDLE_MS - 1)
        await conn.send(b'{"id": 2, "op"')  # a slow client trickling bytes
        clock.advance(1)
        assert (await conn.recv()) is None
        await conn.close()


async def test_slow_request_is_not_cut_off_by_the_idle_timeout(
    serve: Any, sock_path: Path, clock: FakeClock, ops: Ops
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        await conn.send({"id": 1, "op": "slow"})
        await ops.started.wait()
        clock.advance(IDLE_MS * 10)
        ops.release.set()
        assert (await conn.recv()) == {"id": 1, "ok": True, "result": "slow done"}
        # The idle timer restarts from the answer.
        assert (await conn.call({"id": 2, "op": "echo"})) is not None
        await conn.close()
    assert not ops.cancelled.is_set()


async def test_client_closing_mid_request_cancels_the_handler(
    serve: Any, sock_path: Path, ops: Ops
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        await conn.send({"id": 1, "op": "slow"})
        await ops.started.wait()
        await conn.close()
        await ops.cancelled.wait()
        other = await Raw.open(sock_path)
        assert (await other.call({"id": 2, "op": "echo"})) is not None
        await other.close()


async def test_half_closed_client_still_gets_its_answer(
    serve: Any, sock_path: Path, ops: Ops
) -> None:
    """What `printf '...' | socat - UNIX:...` does: send, shut down writing, read the answer."""
    async with serve():
        # Request and end-of-stream are in the kernel before the server even accepts, so the
        # server meets the EOF while the handler runs.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(os.fspath(sock_path))
        sock.sendall(b'{"id": 1, "op": "slow"}\n')
        sock.shutdown(socket.SHUT_WR)
        conn = Raw(*await asyncio.open_unix_connection(sock=sock))
        await ops.started.wait()
        # A round trip on another connection takes the server many loop turns: time enough to
        # meet the EOF (and, if it mistook it for a hang-up, to cancel the handler).
        other = await Raw.open(sock_path)
        assert (await other.call({"id": 2, "op": "echo"})) is not None
        await other.close()
        ops.release.set()
        assert (await conn.recv()) == {"id": 1, "ok": True, "result": "slow done"}
        assert (await conn.recv()) is None
        await conn.close()
    assert not ops.cancelled.is_set()


async def test_pipelined_requests_are_answered_in_order(
    serve: Any, sock_path: Path, ops: Ops
) -> None:
    async with serve():
        conn = await Raw.open(sock_path)
        await conn.send(
            b'{"id": 1, "op": "slow"}\n{"id": 2, "op": "echo"}\n{"id": 3, "op": "echo"}\n'
        )
        await ops.started.wait()
        ops.release.set()
        assert [(await conn.recv() or {}).get("id") for _ in range(3)] == [1, 2, 3]
        await conn.close()


async def test_close_closes_every_connection(serve: Any, sock_path: Path) -> None:
    async with serve() as server:
        conns = [await Raw.open(sock_path) for _ in range(3)]
        for conn in conns:
            assert (await conn.call({"id": 1, "op": "echo"})) is not None
        await server.close()
        for conn in conns:
            assert (await conn.recv()) is None
            await conn.close()


async def test_close_interrupts_a_request_in_flight_with_unavailable(
    serve: Any, sock_path: Path, ops: Ops
) -> None:
    async with serve() as server:
        conn = await Raw.open(sock_path)
        await conn.send({"id": 1, "op": "slow"})
        await ops.started.wait()
        await server.close()
        request_id, code, message = _error(await conn.recv())
        assert (request_id, code) == (1, "unavailable")
        assert "shutting down" in message
        assert (await conn.recv()) is None
        assert ops.cancelled.is_set()
        await conn.close()


# --------------------------------------------------------------------------------------------
# The blocking client (run in a thread: the server shares the test's event loop)


async def test_client_returns_the_result(serve: Any, sock_path: Path) -> None:
    async with serve():
        with AdminClient(sock_path) as client:
            assert await asyncio.to_thread(client.call, "echo", {"a": "é"}) == {"a": "é"}
            assert await asyncio.to_thread(client.call, "echo") == {}


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("not_found", errors.NotFound),
        ("invalid_argument", errors.InvalidArgument),
        ("conflict", errors.Conflict),
        ("permission_denied", errors.PermissionDenied),
        ("too_large", errors.TooLarge),
        ("unavailable", errors.Unavailable),
        ("internal", errors.ScheddError),
    ],
)
async def test_client_raises_the_class_matching_the_error_code(
    serve: Any, sock_path: Path, code: str, cls: type[errors.ScheddError]
) -> None:
    async with serve():
        with AdminClient(sock_path) as client:
            args = {"code": code, "message": "schedule 'x' said no"}
            with pytest.raises(cls) as caught:
                await asyncio.to_thread(client.call, "fail", args)
            assert type(caught.value) is cls
            assert str(caught.value) == "schedule 'x' said no"
            assert caught.value.code == code
            # The connection is still good after an error answer.
            assert await asyncio.to_thread(client.call, "echo") == {}


def test_error_for_unknown_code_is_internal_and_keeps_the_code() -> None:
    err = error_for_code("rate_limited", "slow down")
    assert type(err) is errors.ScheddError
    assert str(err) == "slow down (error code 'rate_limited')"


def test_client_reports_missing_socket_as_daemon_not_running(sock_path: Path) -> None:
    with (
        AdminClient(sock_path) as client,
        pytest.raises(errors.DaemonNotRunning) as caught,
    ):
        client.call("status")
    message = str(caught.value)
    assert f"no schedd is listening on {sock_path} (the socket file does not exist)" in message
    assert "schedd run --config FILE" in message


def test_client_reports_stale_socket_as_daemon_not_running(sock_path: Path) -> None:
    _stale_socket(sock_path)
    with (
        AdminClient(sock_path) as client,
        pytest.raises(errors.DaemonNotRunning, match=f"{sock_path} \\(connection refused"),
    ):
        client.call("status")


@contextmanager
def _unprivileged() -> Iterator[None]:
    """Act as nobody for a moment, so root (as in CI containers) also meets EACCES."""
    if os.geteuid() != 0:
        yield
        return
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


async def test_client_reports_eacces_as_permission_denied_naming_the_socket(
    serve: Any, sock_path: Path, sock_dir: Path
) -> None:
    os.chmod(sock_dir, 0o755)  # the directory lets everyone through; the socket's mode does not
    mode = 0o660 if os.geteuid() == 0 else 0o000
    async with serve(mode=mode):
        with (
            AdminClient(sock_path) as client,
            _unprivileged(),
            pytest.raises(errors.PermissionDenied) as caught,
        ):
            client.call("echo")  # fails in connect(), before the server is involved
    message = str(caught.value)
    assert message.startswith(f"permission denied connecting to {sock_path} (mode {mode:04o}, ")


async def test_client_gets_too_large_for_an_oversized_request(serve: Any, sock_path: Path) -> None:
    async with serve(max_request_bytes=4096):
        with AdminClient(sock_path) as client:
            with pytest.raises(errors.TooLarge, match="max_request_bytes"):
                await asyncio.to_thread(client.call, "echo", {"blob": "x" * 1_000_000})
            # The next call reconnects by itself.
            assert await asyncio.to_thread(client.call, "echo") == {}


async def test_client_reconnects_after_the_daemon_restarts(serve: Any, sock_path: Path) -> None:
    with AdminClient(sock_path) as client:
        async with serve():
            assert await asyncio.to_thread(client.call, "echo", {"n": 1}) == {"n": 1}
        async with serve():
            assert await asyncio.to_thread(client.call, "echo", {"n": 2}) == {"n": 2}


async def test_client_reports_busy_daemon_as_unavailable(serve: Any, sock_path: Path) -> None:
    async with serve(max_connections=1):
        holder = await Raw.open(sock_path)
        assert (await holder.call({"id": 1, "op": "echo"})) is not None
        with (
            AdminClient(sock_path) as client,
            pytest.raises(errors.Unavailable, match="too many admin connections"),
        ):
            await asyncio.to_thread(client.call, "echo")
        await holder.close()


async def test_client_timeout_raises_unavailable_naming_the_op(
    serve: Any, sock_path: Path, ops: Ops
) -> None:
    async with serve():
        with (
            AdminClient(sock_path, timeout_s=30) as client,
            pytest.raises(
                errors.Unavailable, match=r"no answer from schedd .* within 0\.05 s \(op 'slow'\)"
            ),
        ):
            await asyncio.to_thread(client.call, "slow", timeout_s=0.05)
