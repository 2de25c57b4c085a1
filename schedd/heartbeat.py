"""The dead-man's switch: ping an outside monitor while, and only while, schedd is healthy.

Nothing inside schedd can report that schedd has stopped, hung or stopped firing: the part that
would report it is the part that failed. So the alarm lives outside (healthchecks.io, Cronitor,
an Uptime Kuma push monitor), expects a ping every period and pages when pings stop. schedd's
half is to ping *only when it is healthy*: the caller's ``healthy()`` says whether the dispatch
loop is advancing and firings are flowing, and a ``None`` there is the only thing that lets a
ping out. A process that is alive but wedged therefore goes quiet exactly like a dead one.

Timing: ticks are ``interval`` apart on the monotonic clock, counted from start-up, the first one
an interval after ``run()`` starts, so the dispatch loop has had a full interval to show it is
advancing before the first verdict (a ping at start-up would only say the process exists).
A ping that outlasts the interval does not cause a burst: the next tick is never in the past.

A failed ping (an HTTP status of 400 or more, no answer within ``timeout``, a refused
connection, DNS trouble) is logged at warning and reported through ``on_result`` (the failure
counter), and the loop carries on: an unreachable monitor must never affect scheduling. The log
names only the monitor's scheme, host and port: a healthchecks-style URL carries its secret in
the path, and logs travel further than config files.

Why urllib in a thread rather than asyncio streams: urllib gives https with certificate checks,
redirects and the standard ``https_proxy`` variables from the standard library, where streams
would need a hand-written HTTP client. The blocking call runs in ``asyncio.to_thread`` so the
event loop never waits on it, and the deadline is enforced on the loop side with the injected
clock, so a ping stuck in name resolution (which urllib's socket timeout does not cover) still
counts as failed on time; the abandoned thread ends when its own socket timeout or the resolver
gives up, at most one per tick.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable

from schedd import __version__
from schedd.aio import wait_first
from schedd.clock import Clock
from schedd.config import HeartbeatConfig
from schedd.units import format_duration

log = logging.getLogger("schedd.heartbeat")

#: ``send(url, method, body, timeout_s)``: returns when the monitor accepted the ping, raises
#: otherwise.
Send = Callable[[str, str, bytes | None, float], Awaitable[None]]


async def http_ping(url: str, method: str, body: bytes | None, timeout_s: float) -> None:
    """The default ``send``: one request with urllib, off the event loop."""
    await asyncio.to_thread(_request, url, method, body, timeout_s)


def _request(url: str, method: str, body: bytes | None, timeout_s: float) -> None:
    headers = {"User-Agent": f"schedd/{__version__}"}
    if body is not None:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    # The config accepts only http(s) URLs (config.convert.http_url); urlopen raises HTTPError
    # for any final status that is not 2xx.
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310
        pass


def monitor_name(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: enough to say which monitor, without its secret."""
    parts = urllib.parse.urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def describe_failure(exc: Exception) -> str:
    match exc:
        case urllib.error.HTTPError():
            return f"the monitor answered HTTP {exc.code}"
        case urllib.error.URLError():
            return str(exc.reason)
        case _:
            return str(exc) or type(exc).__name__


class Heartbeat:
    def __init__(
        self,
        config: HeartbeatConfig,
        clock: Clock,
        healthy: Callable[[], str | None],
        *,
        send: Send = http_ping,
        summary: Callable[[], str] = lambda: "ok",
        on_result: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        """``healthy()`` returns ``None`` when a ping may go out, otherwise why not;
        ``summary()`` is the one-line body of a POST ping; ``on_result`` hears every ping's
        outcome (True: accepted) so the caller can count failures."""
        self._config = config
        self._clock = clock
        self._healthy = healthy
        self._send = send
        self._summary = summary
        self._on_result = on_result
        self._was_healthy = True

    async def run(self) -> None:
        """Tick forever; returns at once without a URL. Raises only ``CancelledError``."""
        url = self._config.url
        if url is None:
            return
        due = self._clock.monotonic_ms()
        while True:
            due = max(due + self._config.interval_ms, self._clock.monotonic_ms())
            await self._clock.sleep_until(due)
            try:
                await self._tick(url)
            except Exception:
                log.exception("heartbeat tick failed")

    async def _tick(self, url: str) -> None:
        reason = self._healthy()
        if reason is not None:
            if self._was_healthy:
                log.error("heartbeat paused, the monitor will raise the alarm: %s", reason)
                self._was_healthy = False
            return
        if not self._was_healthy:
            log.info("heartbeat resumed: schedd is healthy again")
            self._was_healthy = True
        error = await self._ping(url)
        if error is not None:
            log.warning("heartbeat ping to %s failed: %s", monitor_name(url), error)
        self._on_result(error is None)

    async def _ping(self, url: str) -> str | None:
        """``None`` if the monitor accepted the ping, else what went wrong."""
        method = self._config.method
        body = self._summary().encode() if method == "POST" else None
        timeout_ms = self._config.timeout_ms
        outcome: list[str | None] = []

        async def attempt() -> None:
            try:
                await self._send(url, method, body, timeout_ms / 1000)
            except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
                outcome.append(describe_failure(exc))
            else:
                outcome.append(None)

        deadline = self._clock.monotonic_ms() + timeout_ms
        await wait_first(attempt(), self._clock.sleep_until(deadline))
        return outcome[0] if outcome else f"no answer within {format_duration(timeout_ms)}"
