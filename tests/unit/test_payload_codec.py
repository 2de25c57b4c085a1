"""A run's payload (schedd/payload.py): encoded once per task, decoded as it was encoded.

Both directions keep small payloads: the firings of one schedule share one, and every run
decodes it. A cached answer must be the answer, and a large payload is never held.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schedd.model import CommandTask, Policies, PythonTask, TaskSpec
from schedd.payload import RunPayload, decode_payload, encode_payload

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
tasks: st.SearchStrategy[TaskSpec] = st.one_of(
    st.builds(CommandTask, argv=st.lists(st.text(min_size=1, max_size=30), min_size=1).map(tuple)),
    st.builds(
        PythonTask,
        target=st.just("os:getpid"),
        args=st.lists(json_values, max_size=3).map(tuple),
        kwargs=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=3),
    ),
)


@given(tasks, st.integers(min_value=0, max_value=100), st.none() | st.text(max_size=10))
def test_a_payload_decodes_to_what_was_encoded_every_time(
    task: TaskSpec, max_catchup: int, tenant: str | None
) -> None:
    policies = Policies(max_catchup=max_catchup)
    text = encode_payload(task, policies, tenant)
    expected = RunPayload(task, policies, tenant)
    assert decode_payload(text) == expected
    assert decode_payload(text) == expected, "and again, from the cache"


def test_a_small_payload_is_decoded_once() -> None:
    text = encode_payload(CommandTask(("true", "decoded-once")), Policies())
    assert decode_payload(text) is decode_payload(text)


def test_a_large_payload_is_decoded_again_rather_than_held() -> None:
    text = encode_payload(CommandTask(("echo", "x" * 10_000)), Policies())
    first, second = decode_payload(text), decode_payload(text)
    assert first == second
    assert first is not second
