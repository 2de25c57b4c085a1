"""schedctl's flags → the schedule and task tables the daemon validates as config tables."""

from __future__ import annotations

from typing import Any

import pytest

from schedd.cli.specs import schedule_table, task_table
from schedd.errors import InvalidArgument


def test_a_command_schedule_is_the_config_table_with_the_users_text() -> None:
    task = task_table(
        ["/usr/bin/backup", "--all"],
        cwd="/srv",
        env=["A=1", "B=x=y", "EMPTY="],
        timeout="10m",
        retries=2,
        overlap="queue_one",
        tenant="acme",
    )
    spec = schedule_table(task, cron="0 3 * * *", timezone="Europe/Berlin", jitter="30s")
    assert spec == {
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "jitter": "30s",
        "command": ["/usr/bin/backup", "--all"],
        "cwd": "/srv",
        "env": {"A": "1", "B": "x=y", "EMPTY": ""},
        "timeout": "10m",
        "overlap": "queue_one",
        "tenant": "acme",
        # --retries counts retries; retry.max_attempts counts the first attempt too.
        "retry": {"max_attempts": 3},
    }


def test_unset_flags_leave_their_keys_to_the_daemons_defaults() -> None:
    assert schedule_table(task_table(["true"]), every="5m") == {"every": "5m", "command": ["true"]}
    assert task_table(["true"], retries=0) == {"command": ["true"], "retry": {"max_attempts": 1}}


def test_a_python_task_carries_parsed_json_arguments() -> None:
    task = task_table(None, python="jobs:run", args='[1, "x", null]', kwargs='{"n": {"m": 2}}')
    assert task == {"python": "jobs:run", "args": [1, "x", None], "kwargs": {"n": {"m": 2}}}
    assert schedule_table(task, at="2030-01-01T00:00:00Z", misfire="skip") == {
        "at": "2030-01-01T00:00:00Z",
        "misfire": "skip",
        **task,
    }


def test_a_shell_task_is_one_string() -> None:
    assert task_table(["echo a; echo b"], shell=True) == {
        "command": "echo a; echo b",
        "shell": True,
    }


@pytest.mark.parametrize(
    ("argv", "flags", "message"),
    [
        (None, {}, "missing the task"),
        ([], {}, "missing the task"),
        (["true"], {"python": "m:f"}, "not both"),
        (["true"], {"args": "[]"}, "--args works only with --python"),
        (["true"], {"kwargs": "{}"}, "--kwargs works only with --python"),
        (None, {"python": "m:f", "cwd": "/"}, "--cwd works only with a command"),
        (None, {"python": "m:f", "env": ["A=1"]}, "--env works only with a command"),
        (None, {"python": "m:f", "shell": True}, "--shell works only with a command"),
        (["echo", "a"], {"shell": True}, "--shell takes one string"),
        (["true"], {"env": ["NOEQUALS"]}, "--env: expected NAME=VALUE, got 'NOEQUALS'"),
        (["true"], {"env": ["=v"]}, "--env: expected NAME=VALUE"),
        (None, {"python": "m:f", "args": "[1,"}, "--args: not valid JSON"),
        (None, {"python": "m:f", "args": '{"a": 1}'}, "--args: expected an array"),
        (None, {"python": "m:f", "kwargs": "[1]"}, "--kwargs: expected an object"),
    ],
)
def test_flag_combinations_the_daemon_cannot_see_name_the_flag(
    argv: list[str] | None, flags: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
        task_table(argv, **flags)


@pytest.mark.parametrize(
    ("triggers", "given"),
    [({}, "none"), ({"cron": "* * * * *", "every": "1m"}, "--cron, --every")],
)
def test_a_schedule_needs_exactly_one_trigger(triggers: dict[str, str], given: str) -> None:
    with pytest.raises(
        InvalidArgument, match=f"exactly one of --cron, --every, --at .given: {given}"
    ):
        schedule_table({"command": ["true"]}, **triggers)
