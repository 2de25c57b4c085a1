"""Naming a task's process group safely across time, and killing it only if it is still ours.

Every command task runs as the leader of its own session and process group (pgid == pid), so
"the task" is the group: signalling the group reaches its grandchildren too.

**Why a pid alone is not enough.** The daemon records each running task's pid in the store so
that, after the daemon itself was killed, recovery can kill the orphaned task before re-running
its firing (two runs of one key must never overlap: DESIGN §2, reliability plan §2.3). By then
the pid may belong to an unrelated process: pids are recycled (``kernel.pid_max`` is 32768 on
some hosts). The identity is therefore ``(pid, pgid, start time)``, the start time being field
22 of ``/proc/<pid>/stat`` in clock ticks since boot: a recycled pid has a later start time.

**What the kernel guarantees.** A pid number stays allocated as long as any process uses it as
its pid, process group id or session id. So while any member of our group lives, the number
cannot be handed to a new process, and conversely if the number names a *different* process
now, our group had emptied before it was reused.

**The decision in** :func:`kill_group_if_ours`:

* leader alive with the recorded start time: ours, kill the group;
* leader alive with another start time: the pid was reused, so our group is empty; refuse;
* leader gone, group still has members: kill it. The number cannot have been reused while our
  members lived, so these are our leftovers, unless the number was recycled after our group
  emptied *and* the new holder made a group and died before its members (a double-forking
  daemon does this). That needs the whole pid space to cycle during the daemon's downtime, and
  sparing the group instead would let a leftover of run N overlap run N+1 every time a leader
  dies before its children, which is the common case. We take the small risk and say so.

A record whose pgid is not its pid (we never produce one) is refused: the reasoning above only
holds for group leaders.

The pool also reads a worker's CPU time and RSS here (:func:`cpu_ms`, :func:`rss_bytes`): what
``/proc`` says of a process, next to the identity it says.

Signals go to the group with ``killpg``, and never to pgid 0 or 1: ``killpg(0)`` is the
caller's own group and ``killpg(1)`` is ``kill(-1)``, every process the daemon may signal.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from schedd.errors import InvalidArgument
from schedd.record import record

# Field positions in /proc/<pid>/stat counted from field 3 (state), which follows the
# parenthesised command name; the name may itself contain spaces and parentheses.
_PGRP = 5 - 3
_STARTTIME = 22 - 3


@record
class ProcessIdentity:
    pid: int
    pgid: int
    #: Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).
    start_ticks: int


def process_identity(pid: int) -> ProcessIdentity | None:
    """The identity of ``pid`` now, or ``None`` if no such process exists (zombies still do)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return ProcessIdentity(pid=pid, pgid=int(fields[_PGRP]), start_ticks=int(fields[_STARTTIME]))


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to process group ``pgid``; whether any member (zombies count) received it.

    A group that no longer exists, or whose members all belong to another user, is not an
    error: there is nothing more this daemon can do about it.
    """
    if pgid <= 1:
        raise InvalidArgument(f"refusing to signal process group {pgid}: not a task's group")
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group_if_ours(identity: ProcessIdentity) -> bool:
    """SIGKILL the group ``identity`` led, unless the leader's pid now names another process.

    Returns whether the group received the signal. Never raises for a vanished or foreign
    group; a record that cannot be proven ours (pgid != pid, or pid <= 1) is refused.
    """
    if identity.pgid != identity.pid or identity.pid <= 1:
        return False
    leader = process_identity(identity.pid)
    if leader is not None and leader.start_ticks != identity.start_ticks:
        return False
    return signal_group(identity.pgid, signal.SIGKILL)


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_ms(pid: int) -> int | None:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[14 - 3]) + int(fields[15 - 3])) * 1000 // _CLK_TCK


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (``/proc/<pid>/statm`` field 2, in pages)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_bytes().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None
