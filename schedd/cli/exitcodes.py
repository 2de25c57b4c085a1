"""Exit codes scripts can rely on: one per error code of the admin protocol.

Documented in docs/cli.md; never renumber one.
"""

from __future__ import annotations

from schedd.errors import ScheddError

OK = 0
ERROR = 1  # internal error, or anything without a more precise code
INVALID_ARGUMENT = 2  # also typer/click usage errors
NOT_FOUND = 3
PERMISSION_DENIED = 4
CONFLICT = 5
TOO_LARGE = 6
UNAVAILABLE = 7  # the daemon is not running, or cannot serve the request now
TIMEOUT = 8  # a wait ended before its condition held

BY_CODE = {
    "invalid_argument": INVALID_ARGUMENT,
    "not_found": NOT_FOUND,
    "permission_denied": PERMISSION_DENIED,
    "conflict": CONFLICT,
    "too_large": TOO_LARGE,
    "unavailable": UNAVAILABLE,
    "internal": ERROR,
}


def for_error(err: ScheddError) -> int:
    return BY_CODE.get(err.code, ERROR)
