"""``schedctl schedules add --file``: the file read into ``schedules.add_many`` entries, the
requests it is cut into, and command lines refused before connecting (exit 2, not 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from schedd.cli import exitcodes
from schedd.cli.schedctl import app
from schedd.cli.schedules import FILE_BATCH, FILE_BATCH_BYTES, _batches
from schedd.cli.specs import file_tables
from schedd.errors import InvalidArgument

NOWHERE = "/nonexistent/schedd.sock"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "many.toml"
    path.write_text(text)
    return path


def test_the_files_tables_are_the_config_tables_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[schedules.zeta]
cron = "0 3 * * *"
timezone = "Europe/Berlin"
command = ["/bin/true"]
retry = { max_attempts = 2 }

[schedules.alpha]
at = 2030-01-01T09:00:00
python = "jobs:run"
kwargs = { n = 1 }

[schedules.aware]
at = 2030-01-01T09:00:00+01:00
shell = true
command = "echo hi"
""",
    )
    tables = file_tables(path)
    assert list(tables) == ["zeta", "alpha", "aware"]
    assert tables["zeta"] == {
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "command": ["/bin/true"],
        "retry": {"max_attempts": 2},
    }
    # TOML date-times become the text the config file would read: local stays local.
    assert tables["alpha"]["at"] == "2030-01-01T09:00:00"
    assert tables["aware"]["at"] == "2030-01-01T09:00:00+01:00"
    json.dumps(tables)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[schedules.a\n", "not a TOML file"),
        ('[daemon]\nstate_dir = "x"\n[schedules.a]\nevery = "1m"\n', "found daemon"),
        ("[schedules]\n", "no [schedules.NAME] table"),
        ("", "no [schedules.NAME] table"),
        ("schedules = 5\n", "no [schedules.NAME] table"),
        ("[schedules]\na = 5\n", "schedules.a: expected a table, got int"),
    ],
)
def test_a_file_that_is_not_schedule_tables_is_refused_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InvalidArgument) as refused:
        file_tables(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert message in str(refused.value)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"nope\.toml: cannot read it"):
        file_tables(tmp_path / "nope.toml")


def test_requests_are_cut_at_a_thousand_entries_or_half_a_mebibyte() -> None:
    small = {f"s{i}": {"every": "1m", "command": ["true"]} for i in range(2 * FILE_BATCH + 1)}
    sizes = [len(b) for b in _batches(small, paused=False)]
    assert sizes == [FILE_BATCH, FILE_BATCH, 1]
    [first, *_] = _batches(small, paused=True)
    assert first[0] == {"name": "s0", "spec": small["s0"], "paused": True}

    big = {f"b{i}": {"command": ["echo", "x" * (FILE_BATCH_BYTES // 3)]} for i in range(7)}
    batches = list(_batches(big, paused=False))
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert all(len(json.dumps(b)) <= FILE_BATCH_BYTES for b in batches)
    assert [e["name"] for b in batches for e in b] == list(big), "file order kept"


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["--socket", NOWHERE, "schedules", "add", *args])


def test_file_goes_with_no_name_command_or_schedule_flag(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedules.a]\nevery = "1m"\ncommand = ["true"]\n')
    for extra in (["NAME"], ["--cron", "* * * * *"], ["--retries", "0"], ["--", "true"]):
        r = run("--file", str(path), *extra)
        assert r.exit_code == exitcodes.INVALID_ARGUMENT, (extra, r.stderr)
        assert "cannot go with" in r.stderr
    assert "NAME, --cron, --tz" in run("--file", str(path), "x", "--cron", "y", "--tz", "z").stderr
    missing = run("--every", "1m")
    assert missing.exit_code == exitcodes.INVALID_ARGUMENT
    assert "missing NAME" in missing.stderr
    bad = run("--file", str(tmp_path / "nope.toml"))
    assert bad.exit_code == exitcodes.INVALID_ARGUMENT
    assert "cannot read it" in bad.stderr
