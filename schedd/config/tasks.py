"""A schedule's task: a command (argv) or a Python callable, and the payload cap on it.

Exactly one of ``command`` and ``python`` must be set, and the keys of one kind are refused on
the other (a ``cwd`` on a Python task would be silently meaningless: pool workers are shared).
The payload cap is checked here, on the task as it will be stored, by the same function the
admin API uses, so a config cannot carry what ``schedctl submit`` would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schedd import model
from schedd.config.schema import TASK_KEYS
from schedd.config.walk import At, show
from schedd.errors import TooLarge
from schedd.payload import check_payload_size

_MISPLACED = {
    "command": "is for python tasks only; a command's arguments are part of its argv",
    "python": "is for command tasks only; a python task runs in a shared pool worker "
    "(configured in [workers])",
}


def build_task(
    values: Mapping[str, Any], table: Mapping[str, object], max_payload: int, at: At
) -> model.TaskSpec | None:
    """The task of one schedule table, or None if it is missing or was refused (reported)."""
    kinds = [kind for kind in TASK_KEYS if kind in table]
    if not kinds:
        at.problem(
            'missing the task: set command (the argv to run, e.g. ["/bin/echo", "hello"]) '
            'or python ("package.module:function")'
        )
        return None
    if len(kinds) > 1:
        at.problem("set exactly one of command, python (found both)")
        return None
    kind = kinds[0]
    _report_misplaced(kind, table, at)
    for key in TASK_KEYS[kind]:
        if key in table and key not in values:
            return None  # refused and reported
    task = _command(values, at) if kind == "command" else _python(values)
    if task is not None:
        _check_size(task, table, max_payload, at)
    return task


#: For each kind of task, the keys of the other kind (but the other kind's own key, which
#: cannot be in the table: then it would have both).
_FOREIGN = {
    kind: tuple(key for other, keys in TASK_KEYS.items() if other != kind for key in keys[1:])
    for kind in TASK_KEYS
}


def _report_misplaced(kind: str, table: Mapping[str, object], at: At) -> None:
    for key in _FOREIGN[kind]:
        if key in table:
            (at / key).problem(f"{key} {_MISPLACED[kind]}")


def _command(values: Mapping[str, Any], at: At) -> model.CommandTask | None:
    command: str | tuple[str, ...] = values["command"]
    shell: bool = values.get("shell", False)
    if shell and not isinstance(command, str):
        (at / "command").problem("with shell = true, command is one string for /bin/sh -c")
        return None
    if not shell and isinstance(command, str):
        (at / "command").problem(
            f"expected a non-empty array of strings, got {show(command)}; "
            "to run a string through /bin/sh, set shell = true"
        )
        return None
    return model.CommandTask(
        argv=(command,) if isinstance(command, str) else command,
        cwd=str(values["cwd"]) if "cwd" in values else None,
        env=values.get("env", {}),
        shell=shell,
    )


def _python(values: Mapping[str, Any]) -> model.PythonTask:
    return model.PythonTask(
        target=values["python"], args=values.get("args", ()), kwargs=values.get("kwargs", {})
    )


def _check_size(task: model.TaskSpec, table: Mapping[str, object], limit: int, at: At) -> None:
    try:
        check_payload_size(task, limit)
    except TooLarge as e:
        if isinstance(task, model.CommandTask):
            key = "command"
        else:  # at the arguments the user wrote; args when both are there
            key = "kwargs" if "kwargs" in table and "args" not in table else "args"
        (at / key).problem(str(e))
