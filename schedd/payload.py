"""What a run needs to start, stored apart from schedules and firings (DESIGN §6).

The dispatcher moves ids; only a run that is starting reads its payload. Payloads are canonical
JSON (sorted keys, no whitespace) so identical tasks hash to one content-addressed row, and the
run options that matter only once a run starts or ends (timeout, kill grace, rlimits, retry,
the quarantine hook, the tenant whose retry budget pays) travel with the task rather than
through the dispatcher.

**The cap.** Task arguments are capped (``[defaults] max_payload``, 64 KiB by default). A
scheduler is the wrong place to ship objects: every firing of a schedule shares its payload,
but an ad-hoc task carrying a 5 MB blob is stored per firing, and the failure story in DESIGN's
preamble began with exactly such payloads. The error says what to do instead: pass an id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable
from typing import Any

from schedd.errors import TooLarge
from schedd.model import (
    CommandTask,
    Policies,
    PythonTask,
    TaskSpec,
    policies_from_json,
    policies_to_json,
    task_from_json,
    task_to_json,
)
from schedd.record import record
from schedd.smallcache import SmallCache
from schedd.units import format_size

#: ``[defaults] max_payload`` when the config does not set it.
DEFAULT_MAX_PAYLOAD = 64 * 1024


@record
class RunPayload:
    task: TaskSpec
    policies: Policies
    tenant: str | None


#: Payloads already encoded, by :func:`_body_key`. The schedules of one ``add_many`` or of a
#: config mostly share a handful of tasks, and encoding one (~6 µs) cost more than anything
#: else the store does per schedule; a key costs ~0.5 µs.
_BODIES: SmallCache[Hashable, str] = SmallCache()


def _canonical(body: object) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_payload(task: TaskSpec, policies: Policies, tenant: str | None = None) -> str:
    """The canonical JSON of a run's payload (the same text for the same task, every time)."""
    key = _body_key(task, policies, tenant)
    if key is None:
        return _encode(task, policies, tenant)
    body = _BODIES.get(key)
    if body is None:
        body = _encode(task, policies, tenant)
        _BODIES.put(key, body, len(body))
    return body


def _encode(task: TaskSpec, policies: Policies, tenant: str | None) -> str:
    body: dict[str, Any] = {
        "task": task_to_json(task),
        "policies": policies_to_json(policies),
        "tenant": tenant,
    }
    return _canonical(body)


def _body_key(task: TaskSpec, policies: Policies, tenant: str | None) -> Hashable | None:
    """A key equal for two payloads only when their JSON is the same, or None: not keyed.

    A command's fields are strings, a bool and a string mapping, and those compare equal
    exactly when they encode alike (the env's order does not matter: keys are sorted). A
    Python task's arguments are any JSON, where ``1 == 1.0 == True`` though each encodes
    differently, so only one without arguments is keyed. So are the policies (ints, enums,
    string tuples) and the tenant.
    """
    if isinstance(task, CommandTask):
        env = tuple(sorted(task.env.items())) if task.env else ()
        return ("command", task.argv, task.cwd, env, task.shell, policies, tenant)
    if task.args or task.kwargs:
        return None
    return ("python", task.target, policies, tenant)


#: Payloads already decoded, by their text: every run decodes its firing's payload, and the
#: firings of one schedule share it; decoding one was ~7 % of a no-op Python run on the loop.
_DECODED: SmallCache[str, RunPayload] = SmallCache()


def decode_payload(text: str) -> RunPayload:
    found = _DECODED.get(text)
    if found is not None:
        return found
    body = json.loads(text)
    decoded = RunPayload(
        task=task_from_json(body["task"]),
        policies=policies_from_json(body["policies"]),
        tenant=body.get("tenant"),
    )
    return _DECODED.put(text, decoded, len(text))


def payload_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def arguments_size(task: TaskSpec) -> int:
    """The bytes a task's arguments take in its payload (what ``max_payload`` caps)."""
    if isinstance(task, PythonTask):
        return len(_canonical([list(task.args), dict(task.kwargs)]).encode())
    return len(_canonical([list(task.argv), dict(task.env)]).encode())


def _surely_within(task: TaskSpec, limit: int) -> bool:
    """Whether a command's argv and env surely fit in ``limit`` bytes, told without encoding.

    In the canonical JSON an ASCII string of n characters takes at most 6n + 2 bytes (6 for
    an escaped control character, ``\\u001f``, plus its quotes) and one separator after it; the
    brackets and braces around argv and env take 7. When that bound fits, so does the exact
    size. Anything else (a non-ASCII string, a non-string, a Python task's arbitrary JSON) is
    measured exactly, so the cap and its message do not depend on this shortcut.
    """
    if not isinstance(task, CommandTask):
        return False
    bound = 7
    for text in (*task.argv, *task.env.keys(), *task.env.values()):
        if not isinstance(text, str) or not text.isascii():
            return False
        bound += 6 * len(text) + 3
    return bound <= limit


def check_payload_size(task: TaskSpec, limit: int) -> None:
    """Raise :class:`TooLarge` if the task's arguments exceed ``limit`` bytes."""
    if _surely_within(task, limit):
        return
    size = arguments_size(task)
    if size > limit:
        raise TooLarge(
            f"task arguments are {format_size(size)}, over the {format_size(limit)} limit"
            " (defaults.max_payload); pass an id (a database key, a file path, a URL) and load"
            " the object inside the task instead of passing the object itself"
        )
