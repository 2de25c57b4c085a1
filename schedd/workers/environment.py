"""The environment a task process starts with.

A task does not inherit the daemon's environment (DESIGN §6): the daemon's environment carries
things meant for the daemon alone, and handing them on silently is how a task ends up
impersonating its supervisor or loading the wrong libraries. The environment is built in three
layers, later ones winning:

1. **Inherited, by allow-list only.** Names the operator lists (typically ``PATH``, ``LANG``,
   ``TZ``) are copied from the daemon's environment. ``NEVER_INHERIT`` is subtracted even when
   listed, because those values describe the daemon's process, not the task's:

   * ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID``: a task could report READY or pet
     the watchdog for a wedged daemon (``NotifyAccess=main`` stops it only under systemd).
   * ``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``: socket activation addressed to the
     daemon; a task that honours them would try to use fds it does not have.
   * ``INVOCATION_ID``: would file the task's logs under the daemon's unit invocation.
   * ``CREDENTIALS_DIRECTORY``: where systemd put the daemon's credentials.
   * ``LD_PRELOAD``, ``LD_AUDIT``, ``LD_LIBRARY_PATH``: redirect every dynamic link in the
     task. ``LD_LIBRARY_PATH`` has honest uses (a vendor toolkit, a conda tree), but the value
     the daemon was started with is the daemon's; a task that needs one sets it in its own
     ``env``, which is not filtered.
   * ``PYTHONPATH``, ``PYTHONHOME``: the daemon's interpreter setup would bleed into every
     Python the task starts, and into a different virtualenv's imports.

2. **The task's own ``env``**, as configured: the operator wrote it for this task, so it is
   taken as is, including names from ``NEVER_INHERIT``.

3. **The firing variables** (DESIGN §2), last, so a task cannot override the idempotency key
   or attempt that downstream deduplication relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from schedd.errors import InvalidArgument

FIRING_VARS = (
    "SCHEDD_IDEMPOTENCY_KEY",
    "SCHEDD_SCHEDULED_FOR",
    "SCHEDD_ATTEMPT",
    "SCHEDD_SCHEDULE",
)

NEVER_INHERIT: frozenset[str] = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "INVOCATION_ID",
        "CREDENTIALS_DIRECTORY",
        "LD_PRELOAD",
        "LD_AUDIT",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
    }
)


def build_env(
    *,
    inherited: Mapping[str, str],
    allow: Iterable[str],
    task_env: Mapping[str, str],
    firing: Mapping[str, str],
) -> dict[str, str]:
    """The complete environment for one run; nothing else reaches the task.

    ``firing`` may hold only ``FIRING_VARS`` (an ad-hoc task may lack some of them): it is the
    one layer the task cannot override, so it must not become a way to force other names in.
    """
    unknown = sorted(set(firing) - set(FIRING_VARS))
    if unknown:
        raise InvalidArgument(
            f"firing environment accepts only {', '.join(FIRING_VARS)}; got {', '.join(unknown)}"
        )
    env = {
        name: inherited[name] for name in allow if name in inherited and name not in NEVER_INHERIT
    }
    env.update(task_env)
    env.update(firing)
    return env
