"""schedctl without a daemon: where the socket comes from, and command lines refused locally.

Every refused command line here points at a socket that does not exist, so exit 2 (and not 7,
"daemon not running") proves schedctl refused it before trying to connect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from schedd.admin import client
from schedd.cli import exitcodes, firings
from schedd.cli.app import DEFAULT_SOCKET, find_target
from schedd.cli.schedctl import app
from schedd.errors import PermissionDenied

NOWHERE = "/nonexistent/schedd.sock"


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["--socket", NOWHERE, *args])


def test_the_socket_comes_from_the_first_rule_that_gives_one(tmp_path: Path) -> None:
    config = tmp_path / "schedd.toml"
    config.write_text('[daemon]\nstate_dir = "st"\n')
    assert find_target(Path("/a.sock"), "/b.sock", config).socket == Path("/a.sock")
    assert find_target(Path("/a.sock"), "/b.sock", config).source == "--socket"
    assert find_target(None, "/b.sock", config).socket == Path("/b.sock")
    assert find_target(None, "/b.sock", config).source == "$SCHEDD_SOCKET"
    by_config = find_target(None, None, config)
    assert by_config.socket == tmp_path / "st" / "schedd.sock"
    assert str(config) in by_config.source
    default = find_target(None, None, None)
    assert default.socket == DEFAULT_SOCKET
    assert default.source.startswith("the default")


def test_a_missing_daemon_is_exit_7_naming_the_socket_and_its_source() -> None:
    r = run("status")
    assert r.exit_code == exitcodes.UNAVAILABLE
    assert NOWHERE in r.stderr
    assert "came from --socket" in r.stderr
    assert "schedd run --config" in r.stderr
    assert "systemctl start schedd" in r.stderr


def test_permission_denied_is_exit_4_saying_what_grants_access(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Refused:
        def __init__(self, path: Path) -> None:
            self.path = path

        def __enter__(self) -> Refused:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def call(self, op: str, args: Mapping[str, Any]) -> Any:
            raise PermissionDenied(f"permission denied connecting to {self.path}")

    monkeypatch.setattr(client, "AdminClient", Refused)
    r = run("status")
    assert r.exit_code == exitcodes.PERMISSION_DENIED
    assert f"permission denied connecting to {NOWHERE}" in r.stderr
    assert f"socket {NOWHERE} (from --socket)" in r.stderr
    assert "[admin] group" in r.stderr
    assert "[admin] readers" in r.stderr
    assert "[admin] operators" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["status", "--bogus"],
        ["wait", "--key", "k"],  # replaced by `runs wait`
        ["metrics", "--bogus"],
        ["runs", "show", "abc"],
        ["runs", "list", "--limit", "0"],
        ["schedules", "show"],
        ["schedules", "backfill", "x", "--from", "2026-01-01T00:00:00Z"],
        ["firings", "remove", "--dry-run"],
        ["backlog", "--top", "101"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(*args).exit_code == exitcodes.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["schedules", "add", "x", "--every", "1m"], "missing the task"),
        (["schedules", "add", "x", "--", "true"], "exactly one of --cron, --every, --at"),
        (["schedules", "add", "x", "--every", "1m", "--args", "[]", "--", "true"], "--args"),
        (["submit", "--python", "m:f", "--kwargs", "nope"], "--kwargs: not valid JSON"),
        (["submit", "--env", "X", "--", "true"], "--env: expected NAME=VALUE"),
        (["firings", "remove", "--schedule", "s"], "give --dry-run to see what matches"),
        (["firings", "remove", "--schedule", "s", "--dry-run", "--yes"], "not both"),
        (["runs", "wait"], "give either a firing KEY or --schedule NAME"),
        (["runs", "wait", "k", "--schedule", "s"], "give either a firing KEY or --schedule"),
        (["runs", "wait", "--schedule", "s", "--state", "dead"], "--state works only with"),
        (["runs", "wait", "k", "--count", "2"], "--count works only with --schedule"),
        (["runs", "wait", "k", "--timeout", "5"], "--timeout: "),
        (["dlq", "purge"], "give either a firing ID_OR_KEY or --all"),
        (["dlq", "purge", "1", "--older-than", "7d"], "--older-than works only with --all"),
    ],
)
def test_bad_combinations_are_refused_before_connecting(args: list[str], message: str) -> None:
    r = run(*args)
    assert r.exit_code == exitcodes.INVALID_ARGUMENT, r.stderr
    assert message in r.stderr


def test_firings_remove_yes_works_in_batches_until_nothing_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remaining = 2500
    requests: list[dict[str, Any]] = []

    def fake_call(ctx: object, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
        nonlocal remaining
        assert op == "firings.remove"
        requests.append(dict(args))
        n = min(args["limit"], remaining)
        matched, remaining = remaining, remaining - n
        return {
            "matched": matched,
            "removed": n,
            "remaining": remaining,
            "sample": [f"k{matched - i}" for i in range(min(n, 20))],
        }

    monkeypatch.setattr(firings, "call", fake_call)
    r = run("firings", "remove", "--schedule", "s", "--match", "x", "--state", "failed", "--yes")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "removed 2500 firing(s)\n"
    assert requests == [{"schedule": "s", "match": "x", "states": ["failed"], "limit": 1000}] * 3

    remaining = 1500
    as_json = run("firings", "remove", "--schedule", "s", "--yes", "--json")
    assert json.loads(as_json.stdout) == {
        "matched": 1500,
        "removed": 1500,
        "remaining": 0,
        "sample": [f"k{1500 - i}" for i in range(20)],
    }


def test_firings_remove_stops_when_a_batch_removes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def stuck(ctx: object, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
        calls.append(op)
        return {"matched": 5, "removed": 0, "remaining": 5, "sample": []}

    monkeypatch.setattr(firings, "call", stuck)
    r = run("firings", "remove", "--schedule", "s", "--yes")
    assert r.exit_code == 0
    assert len(calls) == 1
    assert "removed 0 firing(s)" in r.stdout
    assert "5 matching firing(s) were not removed" in r.stdout
