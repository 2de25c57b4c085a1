"""The program of a Python pool worker, and the framing it shares with the daemon.

A worker runs under the *application's* interpreter (``[workers] python``), which has the
application's packages and not schedd. So this file is a standalone script that needs only the
standard library and stays importable by Python 3.9 (no ``match``, no ``X | Y`` evaluated at
run time), started as::

    <python> -u /abs/path/to/pyworker.py <control fd>

The daemon imports the same file as ``schedd.workers.pyworker`` for :func:`encode`,
:class:`FrameReader` and :class:`ProtocolError`: one implementation of the framing serves both
ends, so they cannot drift apart.

**Two channels.** The control channel is one end of a Unix socketpair whose number is the only
argument. stdout and stderr are the pipe the daemon reads as the run's output: whatever a task
prints, however much, lands there and never on the control channel, so a chatty task cannot
corrupt the protocol (anyio's ``test_stderr_flood`` is the model).

**Framing.** Each message is a 4-byte big-endian length and that many bytes of UTF-8 JSON, an
object with a string ``"type"``; lengths outside ``1..MAX_FRAME`` are refused before anything
is buffered, so a garbage header cannot make either side allocate. Any violation (bad length,
bad UTF-8 or JSON, unknown type, a message out of turn, a field of the wrong type) is fatal for
the connection: the peer that sent it is no longer trusted. The daemon kills such a worker; a
worker that receives garbage exits with status :data:`EXIT_PROTOCOL`.

**Conversation**::

    worker: {"type": "ready", "pid", "python"}
    daemon: {"type": "run", "id", "target", "args", "kwargs", "context", "env", "limits"}
    worker: {"type": "done", "id", "ok": true}                 (optionally "retire": true)
            {"type": "done", "id", "ok": false, "error", "kind"}
    ... one run at a time; EOF on the control channel: exit 0.

**A run.** The ``SCHEDD_*`` variables are set in ``os.environ`` for the call and restored
after it. The target ``"pkg.mod:func"`` (dotted attributes after the colon allowed) is imported
once and cached: warm imports are the point of a pool. The limits are set on the worker itself
(it is single-threaded, so nothing else runs under them) and restored after the call: soft
``RLIMIT_AS``/``RLIMIT_NOFILE``/``RLIMIT_CORE``; ``RLIMIT_CPU`` soft at the CPU already used +
``cpu_seconds`` (the kernel counts the process's whole life), hard one second later for a task
that ignores ``SIGXCPU``. Lowering a hard limit cannot be undone without ``CAP_SYS_RESOURCE``;
when a limit cannot be restored the answer carries ``"retire": true`` and the daemon retires the
worker, as it does after a ``MemoryError`` (a heap that failed an allocation is not trusted
with the next task). The function is called with the run's JSON arguments, plus
``context=`` (:class:`TaskContext`) if it declares such a parameter; a coroutine it returns is
run with ``asyncio.run``. Its return value is ignored. Before answering, the worker flushes its
streams: every byte of the run's output is in the pipe before ``done`` is sent, which is how the
daemon attributes output to the right run.

**Failures** are answered, not fatal: the traceback goes to stderr (into the output tail) and
``kind`` says ``"import"`` (the target cannot be loaded), ``"resource_limit"`` (``MemoryError``
under a memory limit) or ``"exception"``. ``SystemExit`` with status 0 or ``None`` is success,
as an exit status would be for a command. A crash of the interpreter is seen by the daemon as
the worker's death.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Before any other import: Python put this file's directory first on sys.path, where
    # schedd/workers/output.py, pool.py, ... would shadow the application's modules of the same
    # names (``os`` and ``sys`` are loaded at start-up already, so they cannot be shadowed).
    _HERE = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p) != _HERE]

import contextlib
import dataclasses
import datetime
import importlib
import inspect
import json
import math
import resource
import socket
import struct
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

# --- framing (shared with the daemon) ---------------------------------------------------------

#: The frame header: the payload's length in bytes, big-endian.
HEADER = struct.Struct(">I")
#: The largest payload either side accepts. Run arguments are capped far lower (64 KiB by
#: default, DESIGN §6); this bound only keeps a corrupt header from costing memory.
MAX_FRAME = 16 * 1024 * 1024
#: Bytes per read of the control channel.
READ_CHUNK = 64 * 1024


class ProtocolError(Exception):
    """A frame or message outside the protocol: the connection cannot be trusted any more."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Made once: ``json.dumps``/``json.loads`` with any non-default argument build a new encoder or
# decoder per call: a fifth of encoding a run's small message, half of decoding one.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def encode(message: Mapping[str, Any]) -> bytes:
    """One frame holding ``message``; :class:`ProtocolError` if it is not JSON or too big."""
    try:
        text = _ENCODER.encode(message)
        payload = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"message is not encodable as JSON: {exc}") from None
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_FRAME} bytes")
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Turns the bytes of a stream into messages, refusing anything outside the protocol."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The messages completed by ``data``, in order; raises :class:`ProtocolError`."""
        self._buf += data
        messages = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            if not 0 < length <= MAX_FRAME:
                raise ProtocolError(f"frame length {length} is outside 1..{MAX_FRAME}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]
            messages.append(_decode(payload))
        return messages

    @property
    def partial(self) -> bool:
        """Whether a frame has begun but not ended (EOF now would cut it)."""
        return bool(self._buf)


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        message = _DECODER.decode(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('frame is not a JSON object with a string "type"')
    return message


# --- the worker program -----------------------------------------------------------------------

#: Exit status of a worker that received something outside the protocol.
EXIT_PROTOCOL = 70
#: Longest ``error`` text in a ``done`` message; the full traceback is in the output.
ERROR_MAX = 1000
#: The failure kinds a ``done`` message may carry.
KINDS = ("exception", "resource_limit", "import")
#: The parameter name that asks for the firing's context.
CONTEXT_PARAMETER = "context"


@dataclasses.dataclass(frozen=True)
class TaskContext:
    """What a task function receives as ``context``: the firing it runs for."""

    idempotency_key: str
    #: The occurrence's instant, an aware UTC datetime.
    scheduled_for: datetime.datetime
    attempt: int
    #: ``None`` for an ad-hoc task submitted without a schedule.
    schedule: str | None


@dataclasses.dataclass(frozen=True)
class RunRequest:
    id: int
    target: str
    args: list[Any]
    kwargs: dict[str, Any]
    context: TaskContext
    env: dict[str, str]
    limits: dict[str, int | None]


def parse_run(message: Mapping[str, Any]) -> RunRequest:
    """A ``run`` message, checked field by field; :class:`ProtocolError` if it is anything else."""
    if message["type"] != "run":
        raise ProtocolError(f"expected a run message, got {message['type']!r}")
    env = get_field(message, "env", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ProtocolError("run.env must map strings to strings")
    limits = get_field(message, "limits", dict)
    if set(limits) != {"memory_bytes", "cpu_seconds", "open_files", "core_bytes"} or not all(
        v is None or (_is_int(v) and v >= 0) for v in limits.values()
    ):
        raise ProtocolError(f"run.limits is malformed: {limits!r}")
    return RunRequest(
        id=get_int(message, "id"),
        target=get_field(message, "target", str),
        args=get_field(message, "args", list),
        kwargs=get_field(message, "kwargs", dict),
        context=_context(get_field(message, "context", dict)),
        env=env,
        limits=limits,
    )


def _context(raw: Mapping[str, Any]) -> TaskContext:
    text = get_field(raw, "scheduled_for", str)
    try:
        instant = datetime.datetime.fromisoformat(
            text[:-1] + "+00:00" if text[-1:] == "Z" else text
        )
    except ValueError:
        raise ProtocolError(f"context.scheduled_for is not RFC 3339: {text!r}") from None
    if instant.tzinfo is None:
        raise ProtocolError(f"context.scheduled_for has no UTC offset: {text!r}")
    schedule = raw.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        raise ProtocolError("context.schedule must be a string or null")
    return TaskContext(
        idempotency_key=get_field(raw, "idempotency_key", str),
        # datetime.UTC is 3.11+; this file must run on older interpreters.
        scheduled_for=instant.astimezone(datetime.timezone.utc),  # noqa: UP017
        attempt=get_int(raw, "attempt"),
        schedule=schedule,
    )


def get_field(message: Mapping[str, Any], name: str, kind: type) -> Any:
    """``message[name]`` if it is a ``kind``; both ends check their peer's messages with it."""
    value = message.get(name)
    if not isinstance(value, kind):
        raise ProtocolError(f"field {name!r} must be a {kind.__name__}, got {value!r:.80}")
    return value


def get_int(message: Mapping[str, Any], name: str) -> int:
    value = message.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ProtocolError(f"field {name!r} must be an integer, got {value!r:.80}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Targets:
    """Imported task functions, each loaded once: warm imports are the point of the pool."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Callable[..., Any], bool]] = {}

    def load(self, target: str) -> tuple[Callable[..., Any], bool]:
        """The function and whether it declares ``context``; raises whatever loading raised."""
        if target not in self._cache:
            self._cache[target] = _load(target)
        return self._cache[target]


def _load(target: str) -> tuple[Callable[..., Any], bool]:
    module_name, colon, attributes = target.partition(":")
    if not (module_name and colon and attributes):
        raise ImportError(f"target {target!r} is not of the form 'package.module:function'")
    obj: Any = importlib.import_module(module_name)
    for name in attributes.split("."):
        obj = getattr(obj, name)
    if not callable(obj):
        raise TypeError(f"{target!r} is not callable")
    return obj, _wants_context(obj)


def _wants_context(func: Callable[..., Any]) -> bool:
    try:
        return CONTEXT_PARAMETER in inspect.signature(func).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return False


class Limits:
    """The run's rlimits on this process for the duration of a ``with``; restored on exit."""

    def __init__(self, wanted: Mapping[str, int | None]) -> None:
        self._wanted = wanted
        self._saved: list[tuple[int, tuple[int, int]]] = []
        #: False if a previous limit could not be put back (a lowered hard limit).
        self.restored = True

    def __enter__(self) -> Limits:
        self._set(resource.RLIMIT_CORE, self._wanted["core_bytes"] or 0)
        memory, files, cpu = (
            self._wanted[k] for k in ("memory_bytes", "open_files", "cpu_seconds")
        )
        if memory is not None:
            self._set(resource.RLIMIT_AS, memory)
        if files is not None:
            self._set(resource.RLIMIT_NOFILE, files)
        if cpu is not None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            soft = math.ceil(usage.ru_utime + usage.ru_stime) + cpu
            self._set(resource.RLIMIT_CPU, soft, soft + 1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._saved:
            which, previous = self._saved.pop()
            try:
                resource.setrlimit(which, previous)
            except (ValueError, OSError):
                self.restored = False

    def _set(self, which: int, soft: int, hard: int | None = None) -> None:
        previous = resource.getrlimit(which)
        self._saved.append((which, previous))
        ceiling = previous[1]
        new_hard = ceiling if hard is None else _at_most(hard, ceiling)
        resource.setrlimit(which, (_at_most(soft, new_hard), new_hard))


def _at_most(value: int, ceiling: int) -> int:
    return value if ceiling == resource.RLIM_INFINITY else min(value, ceiling)


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` set in ``os.environ`` for the block; the previous values come back after it."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Worker:
    """Runs one request at a time and builds its ``done`` answer."""

    def __init__(self) -> None:
        self._targets = Targets()
        self._pid = os.getpid()

    def execute(self, req: RunRequest) -> dict[str, Any]:
        with environment(req.env):
            failure, retire = self._load_and_call(req)
        if os.getpid() != self._pid:  # a fork of the task returned here: it is not the worker
            os._exit(0)
        _flush_stdio()  # what the task printed comes before its traceback
        if failure is not None:
            _write(2, _traceback(failure[0]))  # unbuffered: in the pipe before "done"
        answer: dict[str, Any] = {"type": "done", "id": req.id, "ok": failure is None}
        if failure is not None:
            answer["error"] = _describe(failure[0])
            answer["kind"] = failure[1]
        if retire:
            answer["retire"] = True
        return answer

    def _load_and_call(self, req: RunRequest) -> tuple[tuple[BaseException, str] | None, bool]:
        """(the failure and its kind, or None; whether this worker should retire)."""
        try:
            func, wants_context = self._targets.load(req.target)
        except BaseException as exc:  # noqa: BLE001 - whatever the import raised is the target's
            return (exc, "import"), isinstance(exc, MemoryError)
        limits = Limits(req.limits)
        try:
            with limits:
                _call(func, req, wants_context)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                return (exc, "exception"), not limits.restored
        except BaseException as exc:  # noqa: BLE001 - a task's failure, whatever it is, is reported
            under_limit = isinstance(exc, MemoryError) and req.limits["memory_bytes"] is not None
            kind = "resource_limit" if under_limit else "exception"
            return (exc, kind), isinstance(exc, MemoryError) or not limits.restored
        return None, not limits.restored


def _call(func: Callable[..., Any], req: RunRequest, wants_context: bool) -> None:
    if wants_context:
        result = func(*req.args, **req.kwargs, context=req.context)
    else:
        result = func(*req.args, **req.kwargs)
    if inspect.iscoroutine(result):
        import asyncio  # only async tasks pay for importing asyncio

        asyncio.run(result)


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception:  # noqa: BLE001 - a task's exception may fail to print itself
        text = f"{type(exc).__name__}: <unprintable>"
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 3] + "..."


def _traceback(exc: BaseException) -> str:
    """The traceback from the first frame that is not the worker's own."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # noqa: BLE001 - never let a broken exception kill the worker
        return _describe(exc) + "\n"


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):  # replaced, closed or None by the task
            stream.flush()  # type: ignore[union-attr]


def _write(fd: int, text: str) -> None:
    """Straight to the fd: a task may have replaced or closed ``sys.stderr``."""
    data = memoryview(text.encode("utf-8", "replace"))
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data) :]


def messages(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """The daemon's messages until it closes the channel."""
    reader = FrameReader()
    pending: deque[dict[str, Any]] = deque()
    while True:
        while pending:
            yield pending.popleft()
        data = sock.recv(READ_CHUNK)
        if not data:
            if reader.partial:
                raise ProtocolError("control channel closed in the middle of a frame")
            return
        pending.extend(reader.feed(data))


def serve(sock: socket.socket) -> int:
    version = "{}.{}.{}".format(*sys.version_info[:3])
    sock.sendall(encode({"type": "ready", "pid": os.getpid(), "python": version}))
    worker = Worker()
    for message in messages(sock):
        sock.sendall(encode(worker.execute(parse_run(message))))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        _write(2, "usage: pyworker.py CONTROL_FD (started by schedd, not by hand)\n")
        return 2
    # No core files unless a run asks for them; the hard limit stays so a run can.
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    sock = socket.socket(fileno=int(argv[1]))
    os.set_inheritable(sock.fileno(), False)  # a task's subprocesses must not hold the channel
    try:
        return serve(sock)
    except ProtocolError as exc:
        _write(2, f"schedd worker: protocol error: {exc}\n")
        return EXIT_PROTOCOL
    except OSError:  # the daemon went away while we were answering
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
