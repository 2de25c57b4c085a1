"""schedd scenario 7 (recovery): start to READY after SIGKILL with N committed-unfinished firings.

The firings are made the way an application makes them: ``submit`` over the admin socket,
pipelined on a few connections (which also gives the admin API's submit rate). The task is a
long ``sleep`` and ``[workers] max = 1``, so one runs and N-1 wait committed when the daemon
is killed. Each repetition kills and restarts the same store: recovery finds the lost run
(killing its leftover process group first) and re-queues every committed firing before READY.
"""

from __future__ import annotations

import signal
from typing import Any

from bench.common import Daemon, config, pipeline, running, wait_until, workdir
from bench.pulse import BLOCKER, BLOCKER_ARGV

CONNECTIONS = 4
WINDOW = 500


def submit_all(daemon: Daemon, n: int, task: dict[str, Any]) -> float:
    """Submit N tasks over ``CONNECTIONS`` pipelined connections; return submits per second."""
    submits = [("submit", {"task": task, "key": f"job-{i}"}) for i in range(n)]
    return n / pipeline(daemon.socket, submits, CONNECTIONS, WINDOW)


def recovery(n: int, reps: int) -> dict[str, Any]:
    with workdir("recov") as root:
        daemon = Daemon(root, config(workers=1))
        with running(daemon):
            empty = daemon.start()
            rate = submit_all(daemon, n, {"command": BLOCKER_ARGV})
            wait_until(
                lambda: daemon.call("status")["firings"]["unfinished"] >= n, 300, "submits stored"
            )
            ready: list[float] = []
            for _ in range(reps):
                daemon.kill()
                ready.append(daemon.start(timeout_s=300))
                unfinished = daemon.call("status")["firings"]["unfinished"]
            daemon.kill(signal.SIGTERM)  # ends the blocker the last recovery started again
    return {
        "n": n,
        "submit_rate": rate,
        "ready_s": ready,
        "empty_ready_s": empty,
        "unfinished_after": unfinished,
        "blocker": BLOCKER,
    }
