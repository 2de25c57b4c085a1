"""The admin protocol's wire format: one JSON object per line, in both directions.

A request is ``{"id": <string|integer|null>, "op": <string>, "args": {...}}`` and its answer
``{"id": ..., "ok": true, "result": ...}`` or ``{"id": ..., "ok": false, "error": {"code": ...,
"message": ...}}`` (docs/admin-protocol.md). Newline framing is what makes the socket usable from
``socat`` and a shell; JSON is what makes it usable from any language.

This module is the *boundary*: everything a request can carry is checked here, once, so that the
operations behind it only ever see values the store and the encoder can take. Python's ``json``
accepts more than that, and each gap has bitten someone (reliability-plan §2.1, fuzz seed T22):

* 100 000 opening brackets make the C scanner raise ``RecursionError``, which is not a
  ``ValueError``; anything nested deeper than :data:`MAX_NESTING` is refused even when the parser
  copes, so the limit does not depend on how deep the caller's stack happens to be.
* A 5 000-digit integer raises ``ValueError`` (CPython's int-digits limit); a 25-digit one parses
  fine and then overflows SQLite. Integers must fit in 64 bits.
* ``NaN``, ``Infinity`` and ``1e400`` (which ``float`` turns into ``inf``) are not JSON numbers
  and cannot be encoded back with ``allow_nan=False``.
* ``"\\ud800"`` decodes to a lone surrogate, which ``sqlite3`` and ``str.encode`` reject much
  later, far from the request that carried it. Every key and string is checked here.
* Bytes that are not UTF-8 are refused before parsing (``json.loads`` on ``bytes`` would guess
  UTF-16 or UTF-32 instead).
* A duplicate key (``{"op": "status", "op": "purge"}``) is refused rather than silently taking the
  last one, so a request means the same thing to every parser that reads it.

Every rejection is an :class:`~schedd.errors.InvalidArgument` whose message names the key or
position at fault; nothing else escapes :func:`decode_request` (a property test holds it to that).
Size is not checked here: by the time a line reaches this module it has been buffered, so the
cap is enforced by the server's framing (``max_request_bytes``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, NoReturn

from schedd import errors

RequestId = str | int | None

#: Deepest nesting a request may have (the envelope counts as level 1, ``args`` as level 2).
MAX_NESTING = 64

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: Longer digit strings are refused before ``int()`` ever sees them (int64 has at most 19).
_MAX_INT_DIGITS = 20
_ENVELOPE_KEYS = ("id", "op", "args")


@dataclass(frozen=True)
class Peer:
    """Credentials of the connecting process, from ``SO_PEERCRED`` at ``connect()`` time."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Request:
    id: RequestId
    op: str
    args: dict[str, Any]


class _Rejected(Exception):
    """Raised from inside the JSON parser's hooks; turned into InvalidArgument by the caller."""


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _reject_int(digits: str) -> int:
    bare = digits.removeprefix("-")
    if len(bare) <= _MAX_INT_DIGITS:
        value = int(digits)
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
    raise _Rejected(f"integer {_clip(digits)} does not fit in 64 bits")


def _reject_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {_clip(text)} is too large for a double")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise _Rejected(f"{name} is not valid JSON (numbers must be finite)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "the request"


#: A ``\uD800``-``\uDFFF`` escape: the only way a surrogate gets into a decoded request (the
#: line is strict UTF-8, which has none). A line without one needs no string checked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_tree(root: object, line: bytes) -> None:
    """Refuse nesting beyond MAX_NESTING and strings that cannot be encoded as UTF-8.

    The walk that names the place at fault runs only when a check could fail: the line has a
    surrogate escape, or the tree is deeper than allowed. Otherwise the depth is proven by a
    walk that builds no paths (0.5 ms rather than 2 ms for a thousand-entry ``add_many``).
    """
    if _SURROGATE_ESCAPE.search(line) is not None or _deeper_than(root, MAX_NESTING):
        _walk_tree(root)


def _deeper_than(root: object, levels: int) -> bool:
    """Whether ``root`` nests containers more than ``levels`` deep (itself being level 1), one
    level at a time, so a tree the C parser accepted cannot overflow the stack here."""
    level: list[dict[Any, Any] | list[Any]] = [root] if isinstance(root, dict | list) else []
    for _ in range(levels):
        if not level:
            return False
        inner: list[dict[Any, Any] | list[Any]] = []
        for value in level:
            items = value.values() if isinstance(value, dict) else value
            inner += [item for item in items if isinstance(item, dict | list)]
        level = inner
    return bool(level)


def _walk_tree(root: object) -> None:
    """The checks of :func:`_check_tree` on every node, raising with the path of the first
    failure. Iterative, so a tree the C parser accepted (up to the recursion limit) cannot
    overflow the stack here.
    """
    stack: list[tuple[object, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            _check_text(value, where, "string")
        elif isinstance(value, dict | list):
            if len(where) >= MAX_NESTING:
                raise _Rejected(
                    f"nesting too deep at {_path(where)} (more than {MAX_NESTING} levels)"
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, where, "key")
                if isinstance(item, str | dict | list):
                    stack.append((item, (*where, key)))


def _check_text(text: str, where: tuple[str | int, ...], what: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        place = f"a key in {_path(where)}" if what == "key" else _path(where)
        raise _Rejected(
            f"{place}: string contains a lone surrogate {text[exc.start]!r} "
            "(\\ud800-\\udfff escapes must come in valid pairs)"
        ) from None


def _loads(line: bytes) -> object:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidArgument(
            f"request is not valid UTF-8 (byte 0x{line[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        value = json.loads(
            text,
            parse_int=_reject_int,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
        _check_tree(value, line)
    except _Rejected as exc:
        raise errors.InvalidArgument(f"request rejected: {exc}") from None
    except RecursionError:
        raise errors.InvalidArgument(
            f"request rejected: nesting too deep (more than {MAX_NESTING} levels)"
        ) from None
    except json.JSONDecodeError as exc:
        raise errors.InvalidArgument(
            f"request is not valid JSON: {exc.msg} at column {exc.pos + 1}"
        ) from None
    return value


def _unknown_keys_message(unknown: list[str], allowed: Set[str], what: str) -> str:
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        parts.append(f"{key!r}{hint}")
    plural = "s" if len(unknown) > 1 else ""
    accepted = ", ".join(sorted(allowed)) if allowed else "none"
    return f"unknown {what}{plural} {', '.join(parts)}; accepted: {accepted}"


def _valid_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    if isinstance(value, str):
        return value.isascii() or _encodable(value)
    return value is None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_request(line: bytes) -> Request:
    """Parse and validate one request line (its trailing newline is optional).

    Raises :class:`~schedd.errors.InvalidArgument` naming what is wrong, and nothing else.
    """
    value = _loads(line)
    if not isinstance(value, dict):
        raise errors.InvalidArgument(f"request must be a JSON object, got {_json_type(value)}")
    unknown = sorted(set(value) - set(_ENVELOPE_KEYS))
    if unknown:
        raise errors.InvalidArgument(
            _unknown_keys_message(unknown, set(_ENVELOPE_KEYS), "request key")
        )
    request_id = value.get("id")
    if not _valid_id(request_id):
        raise errors.InvalidArgument(
            f"id: must be a string, an integer or null, got {_json_type(request_id)}"
        )
    if "op" not in value:
        raise errors.InvalidArgument(
            'op: missing; a request is {"id": ..., "op": ..., "args": {...}}'
        )
    op = value["op"]
    if not isinstance(op, str):
        raise errors.InvalidArgument(f"op: must be a string, got {_json_type(op)}")
    args = value.get("args")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise errors.InvalidArgument(f"args: must be an object, got {_json_type(args)}")
    return Request(request_id, op, args)


def decode_request_id(line: bytes) -> RequestId:
    """Best effort: the id of a request :func:`decode_request` refused, so the error can carry it.

    Parses leniently (a NaN deep in ``args`` does not hide a perfectly good id) but returns only
    an id that is itself valid; ``None`` when there is none to be had.
    """
    try:
        value = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict):
        request_id = value.get("id")
        if _valid_id(request_id):
            return request_id
    return None


def _encode(message: dict[str, Any]) -> bytes:
    # Control characters (newlines included) are always escaped by json.dumps, so this is one
    # line even with ensure_ascii=False.
    text = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def encode_response_ok(request_id: RequestId, result: Any) -> bytes:
    """One response line. Raises TypeError/ValueError if ``result`` is not encodable JSON."""
    return _encode({"id": request_id, "ok": True, "result": result})


def encode_response_error(request_id: RequestId, err: errors.ScheddError) -> bytes:
    """One error line; never fails, whatever the message contains."""
    message = str(err).encode("utf-8", "backslashreplace").decode("utf-8")
    return _encode({"id": request_id, "ok": False, "error": {"code": err.code, "message": message}})


def check_args(
    args: Mapping[str, Any],
    *,
    required: Set[str] = frozenset(),
    optional: Set[str] = frozenset(),
) -> None:
    """Refuse unknown argument keys (with a did-you-mean) and missing required ones.

    Unknown keys are reported first: a misspelt required argument is both unknown and missing,
    and "did you mean 'name'?" is the message that fixes it.
    """
    allowed = required | optional
    if required <= args.keys() <= allowed:
        return  # the usual case, told without sorting (add_many checks a thousand entries)
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise errors.InvalidArgument(_unknown_keys_message(unknown, allowed, "argument"))
    missing = sorted(required - set(args))
    if missing:
        plural = "s" if len(missing) > 1 else ""
        names = ", ".join(repr(m) for m in missing)
        raise errors.InvalidArgument(f"missing required argument{plural} {names}")
