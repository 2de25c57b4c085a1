"""The log line formats: text and JSON, journald's priority prefix, event fields, exceptions."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from schedd.logs import (
    EVENT_FIELDS,
    BatchedStreamHandler,
    Event,
    JsonFormatter,
    LogFormat,
    setup_logging,
)

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) (?P<rest>.*)")
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

Setup = Callable[..., list[str]]


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """Set logging up on a real file, run ``emit``, return the lines written; restore after."""
    root, schedd = logging.getLogger(), logging.getLogger("schedd")
    saved = (root.handlers[:], root.level, schedd.handlers[:], schedd.level, schedd.propagate)
    streams: list[TextIO] = []

    def run(
        emit: Callable[[], None],
        *,
        fmt: LogFormat = "text",
        level: str = "info",
        journal: bool | str = False,
    ) -> list[str]:
        path = tmp_path / f"log-{len(streams)}"
        stream = path.open("w", encoding="utf-8")
        streams.append(stream)
        if journal is True:
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        elif journal:
            monkeypatch.setenv("JOURNAL_STREAM", journal)
        else:
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        setup_logging(level, fmt, stream=stream)
        emit()
        stream.flush()
        return path.read_text(encoding="utf-8").splitlines()

    yield run
    for stream in streams:
        stream.close()
    root.handlers[:], root.level, schedd.handlers[:], schedd.level, schedd.propagate = saved


def run_finished() -> None:
    logging.getLogger("schedd.attempt").info(
        "run finished: schedule=%s outcome=%s",
        "backup",
        "succeeded",
        extra=Event(
            schedule="backup",
            key="backup@2026-03-29T01:00:00.000Z",
            attempt=2,
            duration_ms=1500,
            outcome="succeeded",
        ),
    )


def failing() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("schedd.runner").exception("run failed inside schedd")


def test_text_lines_carry_a_utc_timestamp_level_and_logger(logged: Setup) -> None:
    [line] = logged(run_finished)
    m = TEXT_LINE.fullmatch(line)
    assert m, line
    assert m["level"] == "INFO"
    assert m["rest"] == "schedd.attempt: run finished: schedule=backup outcome=succeeded"


@pytest.mark.parametrize(
    ("method", "priority"),
    [("debug", 7), ("info", 6), ("warning", 4), ("error", 3), ("critical", 2)],
)
def test_on_the_journal_stream_text_lines_start_with_the_priority(
    logged: Setup, method: str, priority: int
) -> None:
    [line] = logged(
        lambda: getattr(logging.getLogger("schedd.x"), method)("hello"),
        level="debug",
        journal=True,
    )
    assert line == f"<{priority}>schedd.x: hello"


@pytest.mark.parametrize("value", ["1:2", "garbage", ""])
def test_a_journal_stream_that_is_not_our_stderr_gets_no_prefix(logged: Setup, value: str) -> None:
    """JOURNAL_STREAM is inherited: a daemon whose stderr was redirected must not claim it."""
    [line] = logged(lambda: logging.getLogger("schedd.x").warning("hello"), journal=value)
    assert TEXT_LINE.fullmatch(line), line


def test_json_lines_carry_the_event_fields(logged: Setup) -> None:
    [line] = logged(run_finished, fmt="json")
    entry = json.loads(line)
    assert TS.fullmatch(entry.pop("ts")), line
    assert entry == {
        "level": "info",
        "logger": "schedd.attempt",
        "msg": "run finished: schedule=backup outcome=succeeded",
        "schedule": "backup",
        "key": "backup@2026-03-29T01:00:00.000Z",
        "attempt": 2,
        "duration_ms": 1500,
        "outcome": "succeeded",
    }


def test_every_event_field_passes_through_extra_into_json(logged: Setup) -> None:
    """No field name collides with a LogRecord attribute (logging would raise KeyError)."""
    fields = {name: f"v-{name}" for name in EVENT_FIELDS}
    [line] = logged(lambda: logging.getLogger("schedd.x").info("x", extra=fields), fmt="json")
    entry = json.loads(line)
    assert {name: entry[name] for name in EVENT_FIELDS} == fields


def test_json_takes_only_the_declared_event_fields(logged: Setup) -> None:
    [line] = logged(
        lambda: logging.getLogger("schedd.x").info("x", extra={"token": "s3cret", "pid": 42}),
        fmt="json",
    )
    entry = json.loads(line)
    assert entry["pid"] == 42
    assert "token" not in entry
    assert "pid" in EVENT_FIELDS


def test_json_timestamp_is_the_records_creation_time_in_utc_with_ms() -> None:
    record = logging.LogRecord("schedd.x", logging.INFO, __file__, 1, "m", None, None)
    record.created = 1774746000.123  # 2026-03-29T01:00:00.123Z
    assert json.loads(JsonFormatter(journal=False).format(record))["ts"] == (
        "2026-03-29T01:00:00.123Z"
    )


def test_json_exception_is_one_line_with_the_traceback_as_exc(logged: Setup) -> None:
    [line] = logged(failing, fmt="json")
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert entry["msg"] == "run failed inside schedd"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ValueError: boom")


def test_json_on_the_journal_stream_is_prefixed_and_parses_after_the_prefix(
    logged: Setup,
) -> None:
    [line] = logged(failing, fmt="json", journal=True)
    assert line.startswith("<3>{")
    assert json.loads(line.removeprefix("<3>"))["exc"].endswith("ValueError: boom")


def test_json_escapes_non_ascii_so_any_locale_keeps_it_valid(logged: Setup) -> None:
    text = "café 日本 \u2603"
    [line] = logged(lambda: logging.getLogger("schedd.x").info("%s", text), fmt="json")
    assert line.isascii()
    assert json.loads(line)["msg"] == text


def test_text_keeps_non_ascii_readable(logged: Setup) -> None:
    [line] = logged(lambda: logging.getLogger("schedd.x").info("schedule=café-日本"))
    assert line.endswith("schedd.x: schedule=café-日本")


def test_text_continuation_lines_are_indented_so_they_cannot_pass_for_events(
    logged: Setup,
) -> None:
    forged = "2026-03-29 01:00:00.000 ERROR schedd.x: forged"
    lines = logged(lambda: logging.getLogger("schedd.x").warning("reason=%s", f"a\n{forged}"))
    assert len(lines) == 2
    assert TEXT_LINE.fullmatch(lines[0])
    assert lines[1] == "  " + forged


def test_text_traceback_on_the_journal_stream_has_the_priority_on_every_line(
    logged: Setup,
) -> None:
    lines = logged(failing, journal=True)
    assert lines[0] == "<3>schedd.runner: run failed inside schedd"
    assert lines[1] == "<3>  Traceback (most recent call last):"
    assert lines[-1] == "<3>  ValueError: boom"
    assert all(line.startswith("<3>  ") for line in lines[1:])


def test_level_applies_to_schedd_and_others_speak_from_warning_up(logged: Setup) -> None:
    def emit() -> None:
        logging.getLogger("schedd.x").debug("ours, debug")
        logging.getLogger("schedd.x").info("ours, info")
        logging.getLogger("asyncio").info("theirs, info")
        logging.getLogger("asyncio").error("theirs, error")

    infos = logged(emit, level="info", fmt="json")
    assert [json.loads(line)["msg"] for line in infos] == ["ours, info", "theirs, error"]
    debugs = logged(emit, level="debug", fmt="json")
    assert [json.loads(line)["msg"] for line in debugs] == [
        "ours, debug",
        "ours, info",
        "theirs, error",
    ]


class Watched(io.StringIO):
    """A stream that says when it was flushed: the handler flushes after every write."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = asyncio.Event()

    def flush(self) -> None:
        super().flush()
        self.flushed.set()


class RunLines(logging.LoggerAdapter[logging.Logger]):
    """Logs as a run does: every line carries its firing's key (an ``Event``)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, {**kwargs, "extra": Event(key="job@2026-01-01T00:00:00.000Z")}


def batched(delay_s: float) -> tuple[RunLines, Watched, BatchedStreamHandler]:
    stream = Watched()
    handler = BatchedStreamHandler(stream, delay_s)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"schedd.test.batched.{id(handler)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return RunLines(log), stream, handler


async def test_a_line_after_a_quiet_spell_goes_out_at_once_and_the_next_ones_together() -> None:
    log, stream, _ = batched(0.01)
    log.info("one")
    assert stream.getvalue() == "INFO one\n", "nothing was written lately: at once"
    stream.flushed.clear()
    log.info("two")
    log.debug("three")
    assert stream.getvalue() == "INFO one\n", "soon after a write: gathered"
    async with asyncio.timeout(5):
        await stream.flushed.wait()
    assert stream.getvalue() == "INFO one\nINFO two\nDEBUG three\n"


async def test_a_warning_writes_what_was_gathered_and_itself_at_once_in_order() -> None:
    log, stream, handler = batched(3600)
    log.info("first")
    log.info("routine")
    assert stream.getvalue() == "INFO first\n"
    log.warning("trouble")
    assert stream.getvalue() == "INFO first\nINFO routine\nWARNING trouble\n"
    log.info("later")
    handler.flush()  # as logging.shutdown does at exit
    assert stream.getvalue().endswith("WARNING trouble\nINFO later\n")


async def test_a_line_logged_off_the_loop_is_written_at_once_after_what_was_gathered() -> None:
    log, stream, _ = batched(3600)
    log.info("first")
    log.info("on the loop")
    await asyncio.to_thread(log.info, "from a thread")
    assert stream.getvalue() == "INFO first\nINFO on the loop\nINFO from a thread\n"


async def test_lines_other_than_runs_are_written_at_once_after_what_was_gathered() -> None:
    log, stream, _ = batched(3600)
    log.info("first")
    log.info("a run ended")
    log.logger.info("admin dlq.purge by uid=0")  # an operator's audit line: no firing key
    assert stream.getvalue() == "INFO first\nINFO a run ended\nINFO admin dlq.purge by uid=0\n"
