"""The entry point of ``schedd.pyz``: one file that is ``schedd``, ``schedctl`` and a pool worker.

The archive's ``__main__.py`` calls :func:`main`, which picks the role:

* ``schedctl`` when started through a link (or copy) named ``schedctl``, or as
  ``schedd.pyz schedctl ...``;
* ``schedd`` otherwise (``schedd.pyz run --config F``, also ``schedd.pyz schedd ...``);
* a Python pool worker when the pool starts the archive as ``<python> -u schedd.pyz
  __pyworker__ FD``. The worker program cannot be run as a file from inside a zip, so the pool
  asks :func:`worker_program` how to start it.

**Python 3.9 at import.** The worker role runs under the *application's* interpreter
(``[workers] python``), which may be older than schedd's own, so this module, like
``pyworker.py``, parses and runs on Python 3.9 up to the point where it picks a role: stdlib
imports only, and the CLIs are imported only once the role is known to be one of theirs. A
worker also must not see schedd's dependencies: the archive is on ``sys.path`` while Python
runs it, and would shadow the application's own ``typer`` or ``rich``, so it is taken off
before the task code's first import.
"""

from __future__ import annotations

import os
import sys

#: The argument by which the pool tells the archive to be a worker (not a user-facing command).
WORKER_ROLE = "__pyworker__"
#: The roles a first argument or the program's name can select.
ROLES = ("schedd", "schedctl")
#: The oldest Python the daemon and schedctl run on (pyproject's requires-python).
MIN_PYTHON = (3, 11)

#: The zipapp schedd runs from, made absolute at once (a worker starts in another directory),
#: or None when schedd is installed as files.
ARCHIVE: str | None = None
_archive = getattr(__spec__.loader, "archive", None) if __spec__ is not None else None
if isinstance(_archive, str):
    ARCHIVE = os.path.abspath(_archive)


def worker_program(script: str) -> tuple[str, ...]:
    """The arguments after ``<python> -u`` and before the control fd that start a pool worker.

    ``script`` is the worker program as a file (``schedd/workers/pyworker.py``); from a zipapp
    that path is inside the archive, so the worker is the archive itself in its worker role.
    """
    if ARCHIVE is None:
        return (script,)
    return (ARCHIVE, WORKER_ROLE)


def _run_worker(args: list[str]) -> int:
    from schedd.workers import pyworker

    if ARCHIVE is not None:
        sys.path[:] = [p for p in sys.path if os.path.realpath(p) != os.path.realpath(ARCHIVE)]
    return pyworker.main(["pyworker", *args])


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv if argv is None else argv)
    name, rest = os.path.basename(args[0]), args[1:]
    if rest[:1] == [WORKER_ROLE]:
        sys.exit(_run_worker(rest[1:]))
    if sys.version_info < MIN_PYTHON:
        wanted = ".".join(map(str, MIN_PYTHON))
        sys.stderr.write(
            f"{name}: needs Python {wanted} or later, not {sys.version.split()[0]}"
            f" ({sys.executable})\n"
        )
        sys.exit(1)
    role = name if name in ROLES else "schedd"
    if rest[:1] and rest[0] in ROLES:
        role, rest = rest[0], rest[1:]
    # The installed scripts' own entry points, as if started under the role's name: click takes
    # the program name (usage lines, the completion variable) from argv[0].
    sys.argv = [role, *rest]
    if role == "schedctl":
        from schedd.cli.schedctl import main as run
    else:
        from schedd.cli.schedd import main as run
    run()
