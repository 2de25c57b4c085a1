"""Logging to stderr in a form journald and humans both read well.

Under systemd (``JOURNAL_STREAM`` set) each line starts with the syslog priority as ``<N>`` so
journald files it at the right level, and no timestamp is printed (journald adds its own).
Elsewhere lines carry a UTC timestamp.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        fmt.default_msec_format = "%s.%03d"
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    root = logging.getLogger("schedd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
