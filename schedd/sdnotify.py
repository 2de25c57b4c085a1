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


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET")

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
