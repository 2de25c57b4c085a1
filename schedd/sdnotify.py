"""systemd's notify protocol over ``$NOTIFY_SOCKET``, with the standard library only.

The protocol is one datagram of ``KEY=VALUE`` lines to a Unix socket (a leading ``@`` means the
abstract namespace); a dependency for that would be larger than the code. Without
``NOTIFY_SOCKET`` (not under systemd) every call is a no-op. Failures are ignored: readiness
reporting must never take the daemon down.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, address: str | None = None, environ: Mapping[str, str] = os.environ) -> None:
        self._address = address if address is not None else environ.get("NOTIFY_SOCKET")
        self.watchdog_ms = _watchdog_ms(environ)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *fields: str) -> None:
        if not self._address:
            return
        addr = self._address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall("\n".join(fields).encode())


def _watchdog_ms(environ: Mapping[str, str]) -> int | None:
    """``WatchdogSec=`` as systemd passes it (``sd_watchdog_enabled``): ``WATCHDOG_USEC``, for
    this process only if ``WATCHDOG_PID`` is unset or names it."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return max(1, int(usec) // 1000)
