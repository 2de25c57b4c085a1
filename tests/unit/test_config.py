from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schedd import model
from schedd.config import (
    Config,
    config_socket_path,
    load_config,
    parse_config,
)
from schedd.errors import ConfigError

ETC = Path("/etc/schedd")
HEAD = '[daemon]\nstate_dir = "state"\n'
ECHO = 'command = ["/bin/echo", "hi"]\n'
EXAMPLE = Path(__file__).resolve().parents[2] / "schedd.toml.example"


def parse(body: str, head: str = HEAD) -> Config:
    return parse_config(head + body, base_dir=ETC)


def problems(body: str, head: str = HEAD) -> dict[str, str]:
    """Every problem of an invalid config, by dotted key."""
    with pytest.raises(ConfigError) as info:
        parse(body, head)
    found = dict(info.value.problems)
    assert len(found) == len(info.value.problems), "one problem per key"
    return found


def only_problem(body: str, head: str = HEAD) -> tuple[str, str]:
    found = problems(body, head)
    assert len(found) == 1, found
    return next(iter(found.items()))


def schedule(body: str, name: str = "backup") -> model.ScheduleSpec:
    config = parse(f"[schedules.{name}]\n{body}")
    assert len(config.schedules) == 1
    return config.schedules[0]


# --- defaults and paths -----------------------------------------------------------------------


def test_minimal_config_gets_every_default() -> None:
    config = parse("")
    assert config.path is None
    assert config.daemon.state_dir == ETC / "state"
    assert config.daemon.shutdown_grace_ms == 30_000
    assert config.store.path == ETC / "state" / "schedd.db"
    assert (config.store.synchronous, config.store.busy_timeout_ms) == ("full", 5_000)
    assert config.store.horizon_ms == 60_000
    assert config.admin.socket == ETC / "state" / "schedd.sock"
    assert (config.admin.mode, config.admin.group) == (0o660, None)
    assert config.admin.max_request_bytes == 1024 * 1024
    assert (config.admin.idle_timeout_ms, config.admin.max_connections) == (300_000, 64)
    assert (config.workers.max, config.workers.output_tail_bytes) == (4, 64 * 1024)
    assert "PATH" in config.workers.env_allow
    assert config.logging.level == "info"
    assert config.defaults.policies == model.Policies()
    assert (config.defaults.jitter_ms, config.defaults.timezone) == (None, "UTC")
    assert config.schedules == ()


def test_every_section_key_is_converted_to_its_field() -> None:
    config = parse(
        """
shutdown_grace = "1m"
[store]
path = "/var/lib/other.db"
synchronous = "normal"
busy_timeout = "2s"
horizon = "5m"
[admin]
socket = "/run/schedd/admin.sock"
mode = "0600"
group = "ops"
max_request_size = "64KiB"
idle_timeout = "30s"
max_connections = 8
[workers]
max = 16
output_tail = "1MiB"
env_allow = ["PATH", "PGHOST"]
[logging]
level = "debug"
[defaults]
misfire = "skip"
misfire_grace = "5m"
max_catchup = 10
overlap = "allow"
timeout = "1h"
kill_grace = "3s"
jitter = "5s"
timezone = "Europe/Berlin"
"""
    )
    assert config.daemon.shutdown_grace_ms == 60_000
    assert config.store.path == Path("/var/lib/other.db")
    assert config.store.synchronous == "normal"
    assert (config.store.busy_timeout_ms, config.store.horizon_ms) == (2_000, 300_000)
    assert config.admin.socket == Path("/run/schedd/admin.sock")
    assert (config.admin.mode, config.admin.group) == (0o600, "ops")
    assert config.admin.max_request_bytes == 65_536
    assert (config.admin.idle_timeout_ms, config.admin.max_connections) == (30_000, 8)
    assert config.workers == type(config.workers)(16, 1_048_576, ("PATH", "PGHOST"))
    assert config.logging.level == "debug"
    assert config.defaults.policies == model.Policies(
        misfire=model.Misfire.SKIP,
        misfire_grace_ms=300_000,
        max_catchup=10,
        overlap=model.Overlap.ALLOW,
        timeout_ms=3_600_000,
        kill_grace_ms=3_000,
    )
    assert (config.defaults.jitter_ms, config.defaults.timezone) == (5_000, "Europe/Berlin")


def test_relative_paths_resolve_against_the_config_files_directory_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "schedd.toml").write_text(
        '[daemon]\nstate_dir = "state"\n[store]\npath = "../db/s.db"\n'
        '[admin]\nsocket = "run/a.sock"\n'
        '[schedules.job]\nevery = "1m"\ncommand = ["/bin/true"]\ncwd = "work"\n'
    )
    monkeypatch.chdir(tmp_path)  # a relative --config, read from elsewhere
    config = load_config(Path("conf/schedd.toml"))
    assert config.path == conf_dir / "schedd.toml"
    assert config.daemon.state_dir == conf_dir / "state"
    assert config.store.path == conf_dir / "../db/s.db"
    assert config.admin.socket == conf_dir / "run/a.sock"
    assert config.schedules[0].task.cwd == str(conf_dir / "work")


def test_absolute_paths_are_kept() -> None:
    config = parse(
        '[schedules.job]\nevery = "1m"\n' + ECHO + 'cwd = "/srv"\n',
        head=('[daemon]\nstate_dir = "/var/lib/schedd"\n'),
    )
    assert config.daemon.state_dir == Path("/var/lib/schedd")
    assert config.schedules[0].task.cwd == "/srv"


def test_sha256_is_of_the_file_bytes(tmp_path: Path) -> None:
    data = (HEAD + "# zoné\n").encode()
    (tmp_path / "s.toml").write_bytes(data)
    assert load_config(tmp_path / "s.toml").sha256 == hashlib.sha256(data).hexdigest()
    assert parse_config(data.decode(), base_dir=tmp_path).sha256 == hashlib.sha256(data).hexdigest()


def test_config_socket_path_is_the_resolved_admin_socket(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(HEAD + '[admin]\nsocket = "a.sock"\n')
    assert config_socket_path(tmp_path / "s.toml") == tmp_path / "a.sock"


def test_config_socket_path_refuses_an_invalid_file(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(HEAD + '[admin]\nsocket = "a.sock"\nmode = 660\n')
    with pytest.raises(ConfigError, match=r"admin\.mode"):
        config_socket_path(tmp_path / "s.toml")


# --- file-level errors --------------------------------------------------------------------------


def test_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[daemon]\nstate_dir = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    assert "line 2" in str(info.value)


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file: No such file"):
        load_config(tmp_path / "absent.toml")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_bytes(HEAD.encode() + b"# \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(tmp_path / "s.toml")


def test_all_problems_are_collected_each_under_its_dotted_key(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        """
[daemon]
state_dir = "state"
shutdown_grace = 30
[workers]
max = 0
[schedules.backup]
cron = "61 * * * *"
command = ["/bin/echo"]
misfire_gracee = "10m"
[schedules.Report]
every = "1h"
command = "echo hi"
"""
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = [key for key, _ in info.value.problems]
    assert keys == [
        "daemon.shutdown_grace",
        "workers.max",
        "schedules.backup.misfire_gracee",
        "schedules.backup.cron",
        "schedules.Report",
        "schedules.Report.command",
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == len(keys)
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert f"{path}: schedules.backup.misfire_gracee: unknown key" in lines[2]


# --- unknown keys and sections ------------------------------------------------------------------


def test_misspelt_schedule_key_never_falls_back_to_the_default() -> None:
    key, msg = only_problem('[schedules.backup]\nevery = "1h"\n' + ECHO + 'misfire_gracee = "1m"\n')
    assert key == "schedules.backup.misfire_gracee"
    assert msg == 'unknown key; did you mean "misfire_grace"?'


def test_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    key, msg = only_problem("[logging]\nzzz = 1\n")
    assert key == "logging.zzz"
    assert msg == "unknown key (known: level)"


def test_misspelt_section_suggests_the_section() -> None:
    key, msg = only_problem("[workerz]\nmax = 2\n")
    assert (key, msg) == ("workerz", 'unknown section; did you mean "workers"?')


def test_key_above_the_first_header_suggests_its_section() -> None:
    key, msg = only_problem("", head='state_dir = "state"\n[daemon]\nstate_dir = "s"\n')
    assert (key, msg) == ("state_dir", 'unknown key; did you mean "daemon.state_dir"?')


def test_section_that_is_not_a_table_is_refused() -> None:
    assert only_problem("", head='daemon = "state"\n') == (
        "daemon",
        'expected a table, got "state"',
    )


def test_missing_state_dir_is_required() -> None:
    assert problems("", head="[daemon]\n") == {"daemon.state_dir": "required key is missing"}


# --- types and ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "msg"),
    [
        ('[workers]\nmax = "5"\n', "workers.max", 'expected an integer >= 1, got "5"'),
        ("[workers]\nmax = 0\n", "workers.max", "expected an integer >= 1, got 0"),
        ("[workers]\nmax = true\n", "workers.max", "expected an integer >= 1, got true"),
        ("[workers]\nmax = 2.5\n", "workers.max", "expected an integer >= 1, got 2.5"),
        (
            '[workers]\nenv_allow = ["PATH", "1X"]\n',
            "workers.env_allow[1]",
            'invalid environment variable name "1X" (letters, digits, _)',
        ),
        ('[workers]\noutput_tail = "64K"\n', "workers.output_tail", 'unknown unit "K"'),
        ('[store]\nsynchronous = "off"\n', "store.synchronous", 'got "off"'),
        ("[store]\nhorizon = 60\n", "store.horizon", 'write "60s"'),
        ('[store]\nbusy_timeout = "0s"\n', "store.busy_timeout", "greater than zero"),
        ('[store]\npath = ""\n', "store.path", 'expected a non-empty string, got ""'),
        ('[logging]\nlevel = "verbose"\n', "logging.level", 'one of "debug", "info"'),
        ('[defaults]\nmisfire = "fire_onse"\n', "defaults.misfire", 'got "fire_onse"'),
        ('[defaults]\ntimezone = "Mars/Olympus"\n', "defaults.timezone", "unknown time zone"),
        ("[defaults]\nmax_catchup = 0\n", "defaults.max_catchup", "integer >= 1, got 0"),
        ("[admin]\nmax_connections = -1\n", "admin.max_connections", "integer >= 1"),
        ('[admin]\nmax_request_size = "10B"\n', "admin.max_request_size", "at least 1024 bytes"),
        ('[admin]\ngroup = ""\n', "admin.group", "non-empty string"),
    ],
)
def test_wrong_type_or_range_names_the_key(body: str, key: str, msg: str) -> None:
    found_key, found_msg = only_problem(body)
    assert found_key == key
    assert msg in found_msg


@pytest.mark.parametrize("mode", ["660", '"0999"', '"rw-rw----"', '"06600"', '"0o660"'])
def test_socket_mode_must_be_an_octal_string(mode: str) -> None:
    key, msg = only_problem(f"[admin]\nmode = {mode}\n")
    assert key == "admin.mode"
    assert msg.startswith('expected an octal permission string like "0660", got ')


def test_socket_mode_without_a_leading_zero_is_octal_too() -> None:
    assert parse('[admin]\nmode = "640"\n').admin.mode == 0o640


def test_socket_path_over_the_unix_limit_is_refused_at_admin_socket() -> None:
    key, msg = only_problem("", head=f'[daemon]\nstate_dir = "/{"d" * 100}"\n')
    assert key == "admin.socket"
    assert "over the 107-byte limit" in msg


# --- schedules: triggers ------------------------------------------------------------------------


def test_cron_schedule_gets_the_defaults_zone_and_policies() -> None:
    config = parse(
        '[defaults]\ntimezone = "Europe/Berlin"\nmisfire = "skip"\ntimeout = "1h"\n'
        '[schedules.backup]\ncron = "0 3 * * *"\n' + ECHO
    )
    (spec,) = config.schedules
    assert spec.name == "backup"
    assert spec.source is model.Source.CONFIG
    assert spec.trigger == model.CronSpec("0 3 * * *", "Europe/Berlin")
    assert spec.task == model.CommandTask(argv=("/bin/echo", "hi"))
    assert spec.policies == model.Policies(misfire=model.Misfire.SKIP, timeout_ms=3_600_000)
    assert spec.jitter_ms is None


def test_schedule_keys_override_defaults() -> None:
    config = parse(
        '[defaults]\ntimezone = "Europe/Berlin"\nmisfire = "skip"\njitter = "10s"\n'
        '[schedules.backup]\ncron = "0 3 * * *"\ntimezone = "UTC"\nmisfire = "fire_all"\n'
        'max_catchup = 3\noverlap = "allow"\nkill_grace = "1s"\njitter = "0s"\n' + ECHO
    )
    (spec,) = config.schedules
    assert spec.trigger == model.CronSpec("0 3 * * *", "UTC")
    assert spec.policies == model.Policies(
        misfire=model.Misfire.FIRE_ALL,
        max_catchup=3,
        overlap=model.Overlap.ALLOW,
        kill_grace_ms=1_000,
    )
    assert spec.jitter_ms == 0


def test_overlap_policies_without_runner_support_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"schedules\.j\.overlap: .*skip.*allow"):
        parse('[schedules.j]\nevery = "1m"\noverlap = "queue_one"\n' + ECHO)


def test_zero_timeout_lifts_a_default_timeout() -> None:
    config = parse(
        '[defaults]\ntimeout = "1h"\n[schedules.j]\nevery = "1m"\ntimeout = "0s"\n' + ECHO
    )
    assert config.schedules[0].policies.timeout_ms is None


def test_every_becomes_an_interval() -> None:
    assert schedule('every = "1h30m"\n' + ECHO).trigger == model.IntervalSpec(5_400_000)


def test_at_string_becomes_a_one_shot_instant() -> None:
    spec = schedule('at = "2027-01-01T09:00:00Z"\n' + ECHO)
    assert spec.trigger == model.OnceSpec(1_798_794_000_000)


def test_at_toml_datetime_with_offset_is_that_instant() -> None:
    spec = schedule("at = 2027-01-01T10:00:00+01:00\n" + ECHO)
    assert spec.trigger == model.OnceSpec(1_798_794_000_000)


def test_at_local_toml_datetime_is_read_in_the_schedules_zone() -> None:
    spec = schedule('at = 2027-01-01T10:00:00\ntimezone = "Europe/Berlin"\n' + ECHO)
    assert spec.trigger == model.OnceSpec(1_798_794_000_000)


def test_at_local_time_in_a_dst_gap_fires_at_the_end_of_the_gap() -> None:
    # 02:30 does not exist in Berlin on 2027-03-28; the fixed-time rule moves it to 03:00 CEST.
    spec = schedule('at = 2027-03-28T02:30:00\ntimezone = "Europe/Berlin"\n' + ECHO)
    assert spec.trigger == model.OnceSpec(1_806_195_600_000)  # 01:00Z


def test_at_local_string_is_read_in_the_default_zone() -> None:
    config = parse(
        '[defaults]\ntimezone = "Europe/Berlin"\n[schedules.once]\nat = "2027-01-01T10:00:00"\n'
        + ECHO
    )
    assert config.schedules[0].trigger == model.OnceSpec(1_798_794_000_000)


def test_at_date_without_time_is_refused() -> None:
    key, msg = only_problem("[schedules.once]\nat = 2027-01-01\n" + ECHO)
    assert key == "schedules.once.at"
    assert msg.startswith("expected a date-time like 2027-01-01T09:00:00")
    assert msg.endswith("got 2027-01-01")


def test_bad_at_string_is_reported_at_the_at_key() -> None:
    key, _ = only_problem('[schedules.once]\nat = "next tuesday"\n' + ECHO)
    assert key == "schedules.once.at"


def test_bad_cron_is_reported_at_the_cron_key_with_the_trigger_message() -> None:
    key, msg = only_problem('[schedules.backup]\ncron = "61 * * * *"\n' + ECHO)
    assert key == "schedules.backup.cron"
    assert msg.startswith('invalid cron expression "61 * * * *"')


def test_bad_zone_is_reported_once_at_the_timezone_key() -> None:
    key, msg = only_problem(
        '[schedules.backup]\ncron = "0 3 * * *"\ntimezone = "Europe/Berln"\n' + ECHO
    )
    assert key == "schedules.backup.timezone"
    assert msg.startswith('unknown time zone "Europe/Berln"')


@pytest.mark.parametrize(
    ("triggers", "found"),
    [
        ('cron = "0 3 * * *"\nevery = "1h"\n', "cron, every"),
        ('cron = "0 3 * * *"\nevery = "1h"\nat = "2027-01-01T00:00:00Z"\n', "cron, every, at"),
        ("", "none"),
    ],
)
def test_a_schedule_needs_exactly_one_trigger(triggers: str, found: str) -> None:
    key, msg = only_problem("[schedules.backup]\n" + triggers + ECHO)
    assert key == "schedules.backup"
    assert msg == f"set exactly one of cron, every, at (found {found})"


def test_bad_every_duration_is_reported_at_every() -> None:
    key, msg = only_problem('[schedules.backup]\nevery = "5x"\n' + ECHO)
    assert key == "schedules.backup.every"
    assert msg.startswith('invalid duration "5x": unknown unit "x"')


def test_bare_number_duration_in_a_schedule_says_to_write_the_unit() -> None:
    key, msg = only_problem('[schedules.backup]\nevery = "1h"\ntimeout = 30\n' + ECHO)
    assert key == "schedules.backup.timeout"
    assert 'write "30s"' in msg


@pytest.mark.parametrize("name", ["Backup", "-x", "a b", "x" * 129])
def test_bad_schedule_name_is_reported_at_the_schedule(name: str) -> None:
    key, _ = only_problem(f'[schedules."{name}"]\nevery = "1h"\n' + ECHO)
    assert key == (f'schedules."{name}"' if " " in name else f"schedules.{name}")


def test_dotted_schedule_names_are_quoted_in_keys() -> None:
    key, _ = only_problem('[schedules."db.backup"]\nevery = "1h"\nmisfire = "never"\n' + ECHO)
    assert key == 'schedules."db.backup".misfire'


def test_schedule_that_is_not_a_table_is_refused() -> None:
    assert only_problem('[schedules]\nbackup = "daily"\n') == (
        "schedules.backup",
        'expected a table, got "daily"',
    )


# --- schedules: jitter ------------------------------------------------------------------------


def test_jitter_longer_than_the_interval_is_refused() -> None:
    key, msg = only_problem('[schedules.j]\nevery = "10s"\njitter = "11s"\n' + ECHO)
    assert key == "schedules.j.jitter"
    assert msg == "jitter 11s is longer than the period 10s"


def test_jitter_longer_than_the_cron_period_is_refused() -> None:
    key, msg = only_problem('[schedules.j]\ncron = "*/5 * * * *"\njitter = "6m"\n' + ECHO)
    assert key == "schedules.j.jitter"
    assert msg == "jitter 6m is longer than the period 5m"


def test_default_jitter_longer_than_the_interval_is_reported_at_the_trigger() -> None:
    key, msg = only_problem('[defaults]\njitter = "1m"\n[schedules.j]\nevery = "10s"\n' + ECHO)
    assert key == "schedules.j.every"
    assert msg == "jitter 1m is longer than the period 10s (jitter from defaults.jitter)"


def test_jitter_equal_to_the_interval_is_allowed() -> None:
    assert schedule('every = "10s"\njitter = "10s"\n' + ECHO).jitter_ms == 10_000


def test_jitter_on_a_one_shot_has_no_period_to_exceed() -> None:
    spec = schedule('at = "2027-01-01T00:00:00Z"\njitter = "1d"\n' + ECHO)
    assert spec.jitter_ms == 86_400_000


# --- schedules: the task ------------------------------------------------------------------------


def test_shell_command_is_one_string() -> None:
    spec = schedule('every = "1m"\nshell = true\ncommand = "date | tee -a /tmp/x"\n')
    assert spec.task == model.CommandTask(argv=("date | tee -a /tmp/x",), shell=True)


def test_env_is_a_table_of_strings() -> None:
    spec = schedule('every = "1m"\n' + ECHO + '[schedules.backup.env]\nPGHOST = "db"\n')
    assert spec.task.env == {"PGHOST": "db"}


@pytest.mark.parametrize(
    ("task", "key", "msg"),
    [
        ("", "schedules.j", "missing command"),
        ("command = []\n", "schedules.j.command", "non-empty array of strings, got an empty array"),
        ('command = "echo hi"\n', "schedules.j.command", "set shell = true"),
        ('command = ["/bin/echo", 5]\n', "schedules.j.command[1]", "expected a string, got 5"),
        ('command = ["", "x"]\n', "schedules.j.command[0]", "the program name is empty"),
        ('command = ["/bin/echo", "a\\u0000b"]\n', "schedules.j.command[1]", "NUL byte"),
        ('command = ["/bin/echo"]\nshell = true\n', "schedules.j.command", "one string"),
        ('command = "echo"\nshell = "yes"\n', "schedules.j.shell", 'true or false, got "yes"'),
        (ECHO + 'cwd = "/tmp/\\u0000"\n', "schedules.j.cwd", "NUL byte"),
        (ECHO + "env = 5\n", "schedules.j.env", "expected a table"),
        (ECHO + "env = { FOO = 5 }\n", "schedules.j.env.FOO", "expected a string, got 5"),
        (ECHO + 'env = { "A B" = "a" }\n', 'schedules.j.env."A B"', "invalid environment"),
        (ECHO + 'env = { "A-B" = "a" }\n', "schedules.j.env.A-B", "invalid environment"),
        (ECHO + 'env = { FOO = "a\\u0000" }\n', "schedules.j.env.FOO", "NUL byte"),
        (ECHO + 'env = { SCHEDD_ATTEMPT = "1" }\n', "schedules.j.env.SCHEDD_ATTEMPT", "reserved"),
    ],
)
def test_bad_task_names_the_key(task: str, key: str, msg: str) -> None:
    found_key, found_msg = only_problem('[schedules.j]\nevery = "1m"\n' + task)
    assert found_key == key
    assert msg in found_msg


def test_every_bad_env_entry_is_reported() -> None:
    found = problems('[schedules.j]\nevery = "1m"\n' + ECHO + 'env = { A = 1, B = "ok", C = 2 }\n')
    assert set(found) == {"schedules.j.env.A", "schedules.j.env.C"}


# --- the shipped example ------------------------------------------------------------------------


def test_the_example_config_parses_cleanly_with_all_three_trigger_kinds() -> None:
    config = load_config(EXAMPLE)
    assert config.daemon.state_dir == EXAMPLE.parent / "state"
    kinds = {type(s.trigger) for s in config.schedules}
    assert kinds == {model.CronSpec, model.IntervalSpec, model.OnceSpec}
    crons = [s.trigger for s in config.schedules if isinstance(s.trigger, model.CronSpec)]
    assert [c.timezone for c in crons] == ["Europe/Berlin"]
    assert any(s.task.shell for s in config.schedules)
    for spec in config.schedules:
        program = spec.task.argv[0]
        assert spec.task.shell or Path(program).is_file(), program
