"""Policies: ``[defaults]`` over schedd's built-in values, a schedule's over ``[defaults]``.

Scalars replace the inherited value; the nested ``retry`` and ``limits`` tables merge field by
field (:class:`~schedd.config.walk.Patch`), so ``retry = { max_attempts = 2 }`` on a schedule
keeps the backoff ``base`` and ``max`` of ``[defaults.retry]``. Cross-field rules (a backoff
``base`` no longer than its ``max``) are checked on the merged result, because the two halves
may come from different tables; the problem goes to the key written in the table at hand.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from schedd import model
from schedd.config.schema import POLICIES
from schedd.config.walk import At, Patch
from schedd.units import format_duration

#: Where a ``[defaults]`` value comes from when the file does not set it.
BUILT_IN = "schedd's built-in defaults"
#: The ``model.Policies`` fields among a table's values.
_ATTRS = frozenset(key.attr for key in POLICIES.values())


def merge_policies(
    base: model.Policies, values: dict[str, Any], at: At, inherited: str
) -> model.Policies:
    """Remove the policy fields from ``values`` and lay them over ``base``.

    ``inherited`` names where ``base`` came from, for messages about the merged result.
    """
    retry: Patch | None = values.get("retry")
    changes: dict[str, Any] = {}
    written = [attr for attr in values if attr in _ATTRS]
    for attr in written:
        value = values.pop(attr)
        changes[attr] = value.over(getattr(base, attr)) if isinstance(value, Patch) else value
    # Most schedules set no policy at all and share ``base`` itself (it is frozen).
    policies = dataclasses.replace(base, **changes) if changes else base
    if retry is not None:
        _check_backoff(policies.retry, set(retry.fields) & {"base_ms", "max_ms"}, at, inherited)
    return policies


def _check_backoff(retry: model.Retry, written: set[str], at: At, inherited: str) -> None:
    """``base`` > ``max`` would cap every delay at ``max``: surely not what was meant."""
    if retry.base_ms <= retry.max_ms or not written:
        return  # both inherited: already reported where they were written
    here, other = ("base", "max") if "base_ms" in written else ("max", "base")
    note = "" if len(written) == 2 else f" ({other} from {inherited})"
    (at / "retry" / here).problem(
        f"base {format_duration(retry.base_ms)} is longer than max "
        f"{format_duration(retry.max_ms)}{note}"
    )
