"""One exception class per meaning, each with a stable ``code``.

The admin protocol sends ``code`` to clients and ``schedctl`` maps it to an exit status, so
codes are part of the public contract: add new ones, never rename them. Messages must name the
offending key, id or argument, because they are shown to operators verbatim.
"""

from __future__ import annotations


class ScheddError(Exception):
    """Root of every error schedd raises on purpose."""

    code = "internal"


class InvalidArgument(ScheddError):
    code = "invalid_argument"


class NotFound(ScheddError):
    code = "not_found"


class Conflict(ScheddError):
    code = "conflict"


class IllegalTransition(Conflict):
    """The store refuses a firing or run state change the lifecycle does not allow."""


class PermissionDenied(ScheddError):
    code = "permission_denied"


class TooLarge(ScheddError):
    code = "too_large"


class Unavailable(ScheddError):
    code = "unavailable"


class StateDirLocked(Unavailable):
    """Another daemon holds the state directory; two writers would double every firing."""


class ConfigError(InvalidArgument):
    """A config file failed validation.

    Carries every problem found (not just the first), each as ``(dotted_key, message)``, so an
    operator fixes a file in one pass.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        prefix = f"{source}: " if source else ""
        lines = [f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


class DaemonNotRunning(Unavailable):
    """The admin socket is absent or refuses connections (client side only)."""
