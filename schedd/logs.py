"""Logging to stderr, one event per line, in a form journald, log shippers and humans read well.

Two formats (``[logging] format``):

* ``text``: ``2026-03-29 01:00:00.123 INFO schedd.attempt: run finished: schedule=...``. The
  structured fields of a run event are already written out in the message.
* ``json``: one object per line, ``{"ts", "level", "logger", "msg", <event fields>, "exc"}``;
  the fields a record carries in ``extra=`` (only the names of :class:`Event`) become keys of
  their own, so a shipper can filter on ``schedule`` or ``outcome`` without parsing ``msg``.
  The line is pure ASCII (``ensure_ascii``): stderr falls back to backslash escapes for
  characters its locale cannot encode (under systemd without a locale that can be ASCII), and
  those would make the line invalid JSON, while ``\\u00e9`` is restored by every JSON parser.

**journald.** When stderr *is* the journal stream (``JOURNAL_STREAM`` names the device and inode
of our stderr, as systemd sets it), every line starts with the syslog priority as ``<N>``, which
journald strips and files as the entry's ``PRIORITY``, and the text format leaves out its
timestamp (journald adds its own). JSON lines get the prefix too: without it every entry would
be filed at the unit's default priority, so ``journalctl -p err`` would miss our errors, and
since journald removes the prefix before storing ``MESSAGE``, ``journalctl -o cat`` still shows
pure JSON. The variable is inherited by every process a service starts, so its mere presence
does not mean our stderr goes to the journal (a test harness, a redirect to a file); only the
device and inode match does (systemd.exec(5) recommends exactly this check).

**Run lines written in batches under load.** Each run logs its start and end at ``info``; a
``write(2)`` per line was 10-30 % of a no-op Python run's cost at the default level. So a run's
line below ``warning`` (a record carrying the firing's ``key``), logged on the event loop less
than :data:`FLUSH_S` after the last write, waits and goes out with the others :data:`FLUSH_S`
after that write. Every other line is written at once, behind whatever waits, in order: after
a quiet spell, a ``warning`` or worse, an operator's command (its audit line), the daemon's own
lifecycle, a line logged off the loop. The price: a daemon killed with SIGKILL under load loses
at most that much of its run lines (the runs themselves are in the store); a normal exit writes
everything.

**One line per event.** A JSON event is one line by construction. A text event that spans lines
(a traceback, a task's error message with newlines in it) has its continuation lines indented,
so every line that starts in column 0 (after the prefix) begins a new event and a message
cannot forge one; under journald each continuation line carries the event's priority prefix too,
since journald files every line as an entry of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Literal, TextIO, TypedDict

from schedd.keys import format_instant

LogFormat = Literal["text", "json"]

#: syslog priorities by logging level, for journald's ``<N>`` prefix.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
#: Indentation of a text event's continuation lines.
_CONTINUATION = "  "
#: Seconds a run's line logged on the event loop under load may wait to be written with others.
FLUSH_S = 0.05


class Event(TypedDict, total=False):
    """The structured fields of a run event, passed as ``extra=Event(...)``.

    A TypedDict rather than free keywords so that mypy rejects a misspelt field at the call
    site, and so that these names are the only ones the JSON format lifts out of a record.
    """

    schedule: str
    key: str
    firing: int
    attempt: int
    pid: int
    outcome: str
    duration_ms: int
    reason: str


#: The field names the JSON format copies from a record into the object, in this order.
EVENT_FIELDS: tuple[str, ...] = tuple(Event.__annotations__)


def _priority(record: logging.LogRecord) -> int:
    return _PRIORITY.get(record.levelno, 6)


class TextFormatter(logging.Formatter):
    """The human format; with ``journal`` the ``<N>`` prefix replaces the timestamp."""

    def __init__(self, *, journal: bool) -> None:
        if journal:
            super().__init__("%(name)s: %(message)s")
        else:
            super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
            self.default_msec_format = "%s.%03d"
            self.converter = time.gmtime
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).split("\n")
        lines = [first, *(_CONTINUATION + line for line in rest)]
        if self._journal:
            prefix = f"<{_priority(record)}>"
            lines = [prefix + line for line in lines]
        return "\n".join(lines)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; with ``journal`` behind the ``<N>`` prefix."""

    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            # The record's own creation time, not a clock read here.
            "ts": format_instant(int(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(entry, ensure_ascii=True, default=str, separators=(",", ":"))
        return f"<{_priority(record)}>{line}" if self._journal else line


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes runs' lines in batches under load (see the module).

    ``emit`` runs under the handler's lock (``Handler.handle`` takes it), and so does the timed
    write, so lines logged from other threads meanwhile keep their order."""

    def __init__(self, stream: TextIO, delay_s: float = FLUSH_S) -> None:
        super().__init__(stream)
        self._delay_s = delay_s
        self._lines: list[str] = []
        #: When run lines were last written, on the loop's clock (which times the batches).
        self._written_at = float("-inf")
        #: The loop a timed write is pending on (a test's or a restarted daemon's loop may be
        #: gone with its timer: a new loop gets a timer of its own).
        self._timed_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
            try:
                loop = asyncio.get_running_loop() if _routine(record) else None
            except RuntimeError:  # off the loop: no timer to write it later
                loop = None
            if loop is None:
                self._write()
            elif self._timed_on is not loop:  # else the pending write takes it
                now, due = loop.time(), self._written_at + self._delay_s
                if now >= due:
                    self._write()
                    self._written_at = now
                else:
                    self._timed_on = loop
                    loop.call_at(due, self._timed_write)
        except Exception:  # noqa: BLE001 - logging's own policy for a failing handler
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def _timed_write(self) -> None:
        self.acquire()
        try:
            if self._timed_on is not None:
                self._written_at = self._timed_on.time()
                self._timed_on = None
            self._write()
        finally:
            self.release()

    def _write(self) -> None:
        if self._lines:
            self.stream.write("".join(self._lines))
            self._lines.clear()
        self.stream.flush()


def _routine(record: logging.LogRecord) -> bool:
    """A run's start or end as every run logs it: the lines worth batching."""
    return record.levelno < logging.WARNING and "key" in record.__dict__


def _stream_is_journal(stream: TextIO, journal_stream: str | None) -> bool:
    """Whether ``stream`` is the journal connection ``JOURNAL_STREAM`` (``DEV:INODE``) names."""
    if not journal_stream:
        return False
    try:
        dev, ino = (int(part) for part in journal_stream.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError):  # malformed variable, or a stream without a descriptor
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(
    level: str = "info", fmt: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send schedd's records at ``level`` and up, and others' warnings, to ``stream`` (stderr).

    The handler sits on the root logger so that what asyncio or a library logs (an exception
    nobody retrieved, say) comes out in the same format and with the same priority prefix,
    not as a bare line from logging's last resort.
    """
    out = sys.stderr if stream is None else stream
    # Neither format shows a record's thread, process or caller, so don't look them up for
    # every record (the Logging HOWTO's "Optimization" switches): a fifth of a run line's cost.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    journal = _stream_is_journal(out, os.environ.get("JOURNAL_STREAM"))
    handler = BatchedStreamHandler(out)
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    handler.setFormatter(formatter(journal=journal))
    ours = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(ours, logging.WARNING))
    schedd = logging.getLogger("schedd")
    schedd.handlers.clear()
    schedd.setLevel(ours)
    schedd.propagate = True
