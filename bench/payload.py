"""schedd scenario 5 (payload independence): the same N schedules with tiny or ~64 KiB tasks.

The incident behind schedd: an in-process scheduler holding every job's arguments in memory.
schedd stores a task once (content-addressed, apart from the firings), the dispatcher never
reads it, and only a starting run loads it. So with N schedules whose tasks are just under the
64 KiB cap, the daemon's RSS and its write-ahead commit rate should be those of the same N with
tiny tasks.

The schedules are added through the admin socket (``schedules.add``, pipelined): schedules from
the config file live in the daemon's parsed config as well, payloads included, which is the
wrong place for large ones. Each is a one-shot ``at`` T whose task is ``sh -c 'exec sleep 3600'``
with one extra argument, distinct per schedule (the payload, ignored by the shell), run with
``[workers] max = 1``: at T the N firings are committed as one pulse and one runs. T is far
enough ahead to cover the adding (a pessimistic estimate; the run fails if the adding
overran it rather than report a pulse that was not one).

Figures: RSS once READY (empty), after adding, after the pulse, and after a restart on the
same store; the add rate; the commit rate of the pulse (N / (last commit seen by the 1 ms
:class:`bench.common.CommitWatch` - T)).

:func:`refused` sends ``schedules.add`` with a 5 MB task, each on its own connection, to a
fresh daemon and counts the error codes: such a job cannot be stored, and the daemon's memory
should not notice the attempts.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
from collections import Counter
from typing import Any

from bench.common import (
    CommitWatch,
    Daemon,
    config,
    pipeline,
    rfc3339_ms,
    rss_bytes,
    running,
    wait_until,
    wall_ms,
    workdir,
)

#: The argument that brings a task's stored JSON just under the 64 KiB ``max_payload``.
NEAR_CAP = 65_536 - 128
REFUSED_BYTES = 5_000_000
#: Pessimistic seconds per ``schedules.add`` (tiny, and per 64 KiB more), for T's lead.
ADD_S = 0.0005
ADD_S_PER_64K = 0.0008


def task(i: int, payload_bytes: int, at_ms: int) -> dict[str, Any]:
    body = (f"{i:08d}" * (payload_bytes // 8 + 1))[:payload_bytes] if payload_bytes else str(i)
    return {"at": rfc3339_ms(at_ms), "command": ["/bin/sh", "-c", "exec sleep 3600", body]}


def payload(n: int, payload_bytes: int) -> dict[str, Any]:
    lead_ms = 2000 + int(2 * n * (ADD_S + ADD_S_PER_64K * payload_bytes / 65_536) * 1000)
    with workdir("payload") as root:
        daemon = Daemon(root, config(workers=1))
        with running(daemon):
            daemon.start()
            rss_empty = _rss(daemon)
            due = wall_ms() + lead_ms
            adds = [
                ("schedules.add", {"name": f"p{i}", "spec": task(i, payload_bytes, due)})
                for i in range(n)
            ]
            add_s = pipeline(daemon.socket, adds, window=50)
            margin_ms = due - wall_ms()
            if margin_ms < 0:
                raise RuntimeError(f"adding {n} took {add_s:.1f}s, past T: raise ADD_S")
            del adds
            rss_added = _rss(daemon)
            with CommitWatch(daemon.db) as watch:
                wait_until(
                    lambda: bool(watch.seen) and watch.seen[-1][1] >= n,
                    margin_ms / 1000 + 300,
                    f"pulse of {n} committed",
                )
            commit_s = (watch.seen[-1][0] - due) / 1000
            rss_pulse = _rss(daemon)
            daemon.kill(signal.SIGTERM)  # ends the blocker
            restart_s = daemon.start()
            rss_restart = _rss(daemon)
            daemon.kill(signal.SIGTERM)
    return {
        "n": n,
        "payload_bytes": payload_bytes,
        "add_rate": n / add_s,
        "start_margin_ms": margin_ms,
        "commit_s": commit_s,
        "rate": n / max(commit_s, 1e-3),
        "rss_empty": rss_empty,
        "rss_added": rss_added,
        "rss_pulse": rss_pulse,
        "rss_restart": rss_restart,
        "restart_ready_s": restart_s,
    }


def _rss(daemon: Daemon) -> int:
    """RSS once the daemon has answered ``status``: its loop is serving, not mid-request."""
    daemon.call("status")
    return rss_bytes(daemon.pid)


def refused(count: int) -> dict[str, Any]:
    """Try ``count`` adds of a 5 MB task, each on a new connection: the error codes returned,
    the first message, and the daemon's RSS before and after."""
    with workdir("refuse") as root, running(Daemon(root, config(workers=1))) as daemon:
        daemon.start()
        rss0 = _rss(daemon)
        codes, message = _refuse(daemon, count)
        return {
            "attempted": count,
            "too_large": codes["too_large"],
            "codes": dict(codes),
            "message": message,
            "rss_before": rss0,
            "rss_after": _rss(daemon),
        }


def _refuse(daemon: Daemon, count: int) -> tuple[Counter[str], str]:
    line = json.dumps(
        {
            "id": 1,
            "op": "schedules.add",
            "args": {"name": "huge", "spec": task(0, REFUSED_BYTES, 4_102_444_800_000)},
        }
    ).encode()
    codes: Counter[str] = Counter()
    message = ""
    for _ in range(count):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(str(daemon.socket))
            # the daemon answers, then closes, once the line passes its limit
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(line + b"\n")
            with sock.makefile("rb") as reader:
                answer = json.loads(reader.readline() or b"{}")
        error = answer.get("error") or {"code": "stored" if answer.get("ok") else "no answer"}
        codes[error["code"]] += 1
        message = message or error.get("message", "")
    return codes, message
