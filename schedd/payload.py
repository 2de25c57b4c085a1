"""What a run needs to start, stored apart from schedules and firings (DESIGN §6).

The dispatcher moves ids; only a run that is starting reads its payload. Payloads are canonical
JSON (sorted keys, no whitespace) so identical tasks hash to one content-addressed row, and the
run options that matter only to a worker (timeout, kill grace) travel with the task rather than
through the dispatcher.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from schedd.model import Policies, TaskSpec, task_from_json, task_to_json


@dataclass(frozen=True, slots=True)
class RunPayload:
    task: TaskSpec
    timeout_ms: int | None
    kill_grace_ms: int


def encode_payload(task: TaskSpec, policies: Policies) -> str:
    body: dict[str, Any] = {
        "task": task_to_json(task),
        "timeout_ms": policies.timeout_ms,
        "kill_grace_ms": policies.kill_grace_ms,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_payload(text: str) -> RunPayload:
    body = json.loads(text)
    return RunPayload(
        task=task_from_json(body["task"]),
        timeout_ms=body.get("timeout_ms"),
        kill_grace_ms=int(body["kill_grace_ms"]),
    )


def payload_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
