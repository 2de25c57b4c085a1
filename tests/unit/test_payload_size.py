"""The payload cap is exact whether or not the arguments are encoded to check it.

``check_payload_size`` skips encoding a command whose argv and env are surely small; these tests
show that shortcut never lets through what the exact size refuses, and that the refusal reads
the same either way.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from schedd import payload
from schedd.errors import TooLarge
from schedd.model import CommandTask, PythonTask, TaskSpec
from schedd.payload import arguments_size, check_payload_size

#: Every ASCII character, control characters, quotes and backslashes (escaped in JSON) included.
ascii_text = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40)
commands = st.builds(
    CommandTask,
    argv=st.lists(ascii_text, min_size=1, max_size=5).map(tuple),
    env=st.dictionaries(ascii_text, ascii_text, max_size=4),
)


def refusal(task: TaskSpec, limit: int) -> str | None:
    try:
        check_payload_size(task, limit)
    except TooLarge as e:
        return str(e)
    return None


@given(commands)
@example(CommandTask(argv=("\x01" * 100,)))  # the worst case: every character escaped
@example(CommandTask(argv=('"\\' * 50,), env={"\x1f": "\n"}))
def test_the_cap_holds_exactly_at_the_limits_either_side_of_the_size(task: CommandTask) -> None:
    size = arguments_size(task)
    assert not payload._surely_within(task, size - 1), "the shortcut passed a task over the cap"
    assert refusal(task, size - 1) is not None
    assert refusal(task, size) is None


@given(commands)
def test_the_shortcut_takes_any_small_ascii_command(task: CommandTask) -> None:
    """Its bound is under 6 times the exact size, so a usual command never gets encoded."""
    assert payload._surely_within(task, 7 * arguments_size(task) + 10)


@pytest.mark.parametrize(
    "task",
    [
        CommandTask(argv=("/bin/echo", "héllo")),
        CommandTask(argv=("/bin/echo",), env={"GREETING": "grüß"}),
        CommandTask(argv=("/bin/echo", "\ud800")),  # a lone surrogate: no UTF-8 form at all
        PythonTask("jobs:run"),
    ],
)
def test_non_ascii_arguments_and_python_tasks_are_measured_exactly(task: TaskSpec) -> None:
    assert not payload._surely_within(task, 64 * 1024)


def test_a_command_over_the_cap_is_refused_with_its_exact_size() -> None:
    task = CommandTask(argv=("/bin/echo", "x" * 70_000))
    assert not payload._surely_within(task, 64 * 1024)
    assert refusal(task, 64 * 1024) == (
        "task arguments are 68.4KiB, over the 64KiB limit (defaults.max_payload); pass an id"
        " (a database key, a file path, a URL) and load the object inside the task instead of"
        " passing the object itself"
    )
