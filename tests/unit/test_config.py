from __future__ import annotations

import grp
import hashlib
import importlib
import pwd
import re
import sys
from pathlib import Path

import pytest

from schedd import model
from schedd.catchup import CatchupSettings
from schedd.config import (
    Config,
    TenantConfig,
    WorkersConfig,
    config_socket_path,
    load_config,
    parse_config,
)
from schedd.config import schema as config_schema
from schedd.errors import ConfigError
from schedd.payload import DEFAULT_MAX_PAYLOAD
from schedd.ratelimit import Rate

ETC = Path("/etc/schedd")
HEAD = '[daemon]\nstate_dir = "state"\n'
ECHO = 'command = ["/bin/echo", "hi"]\n'
EXAMPLE = Path(__file__).resolve().parents[2] / "schedd.toml.example"
REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
#: A user and a group every host has ("root"): admin names must exist where they are read.
HOST_USER = pwd.getpwuid(0).pw_name
HOST_GROUP = grp.getgrgid(0).gr_name


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


def command_task(spec: model.ScheduleSpec) -> model.CommandTask:
    assert isinstance(spec.task, model.CommandTask), spec.task
    return spec.task


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
    assert (config.admin.readers, config.admin.operators) == ((), ())
    assert (config.workers.min, config.workers.max) == (0, 4)
    assert (config.workers.python, config.workers.pythonpath) == (sys.executable, ())
    assert config.workers.max_tasks_per_worker is None
    assert config.workers.max_worker_rss_bytes is None
    assert (config.workers.start_timeout_ms, config.workers.idle_timeout_ms) == (30_000, 60_000)
    assert config.workers.output_tail_bytes == 64 * 1024
    assert "PATH" in config.workers.env_allow
    assert config.logging.level == "info"
    assert config.metrics.max_schedules == 1000
    assert config.defaults.policies == model.Policies()
    assert (config.defaults.jitter_ms, config.defaults.timezone) == (None, "UTC")
    assert config.defaults.max_payload_bytes == DEFAULT_MAX_PAYLOAD
    assert config.tenants == {}
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
group = "{group}"
max_request_size = "64KiB"
idle_timeout = "30s"
max_connections = 8
readers = ["uid:1001", "gid:50"]
operators = ["group:{group}"]
[workers]
min = 2
max = 16
python = "{python}"
pythonpath = ["src", "/opt/lib"]
max_tasks_per_worker = 100
max_worker_rss = "512MiB"
start_timeout = "5s"
idle_timeout = "2m"
output_tail = "1MiB"
env_allow = ["PATH", "PGHOST"]
[dispatch]
max_ready = 500
[catchup]
rate = 2.5
min_rate = 1
max_rate = 50
step = 0.5
max_failure_ratio = 0.25
window = 8
[logging]
level = "debug"
[metrics]
max_schedules = 50
[defaults]
misfire = "skip"
misfire_grace = "5m"
max_catchup = 10
overlap = "allow"
timeout = "1h"
kill_grace = "3s"
jitter = "5s"
timezone = "Europe/Berlin"
max_payload = "1MiB"
on_quarantine = ["/usr/local/bin/page", "--team", "ops"]
[defaults.retry]
max_attempts = 3
base = "2s"
max = "1m"
[defaults.limits]
memory = "1GiB"
cpu = "1m"
open_files = 256
core = "1MiB"
""".replace("{python}", sys.executable).replace("{group}", HOST_GROUP)
    )
    assert config.daemon.shutdown_grace_ms == 60_000
    assert config.store.path == Path("/var/lib/other.db")
    assert config.store.synchronous == "normal"
    assert (config.store.busy_timeout_ms, config.store.horizon_ms) == (2_000, 300_000)
    assert config.admin.socket == Path("/run/schedd/admin.sock")
    assert (config.admin.mode, config.admin.group) == (0o600, HOST_GROUP)
    assert config.admin.max_request_bytes == 65_536
    assert (config.admin.idle_timeout_ms, config.admin.max_connections) == (30_000, 8)
    assert config.admin.readers == ("uid:1001", "gid:50")
    assert config.admin.operators == (f"group:{HOST_GROUP}",)
    assert config.workers == WorkersConfig(
        min=2,
        max=16,
        python=sys.executable,
        pythonpath=(str(ETC / "src"), "/opt/lib"),
        max_tasks_per_worker=100,
        max_worker_rss_bytes=512 * 1024 * 1024,
        start_timeout_ms=5_000,
        idle_timeout_ms=120_000,
        output_tail_bytes=1_048_576,
        env_allow=("PATH", "PGHOST"),
    )
    assert config.dispatch.max_ready == 500
    assert config.catchup == CatchupSettings(
        rate=2.5, min_rate=1, max_rate=50, step=0.5, max_failure_ratio=0.25, window=8
    )
    assert config.logging.level == "debug"
    assert config.metrics.max_schedules == 50
    assert config.defaults.policies == model.Policies(
        misfire=model.Misfire.SKIP,
        misfire_grace_ms=300_000,
        max_catchup=10,
        overlap=model.Overlap.ALLOW,
        timeout_ms=3_600_000,
        kill_grace_ms=3_000,
        retry=model.Retry(max_attempts=3, base_ms=2_000, max_ms=60_000),
        limits=model.Limits(
            memory_bytes=1024**3, cpu_seconds=60, open_files=256, core_bytes=1024 * 1024
        ),
        on_quarantine=("/usr/local/bin/page", "--team", "ops"),
    )
    assert (config.defaults.jitter_ms, config.defaults.timezone) == (5_000, "Europe/Berlin")
    assert config.defaults.max_payload_bytes == 1024 * 1024


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
    assert command_task(config.schedules[0]).cwd == str(conf_dir / "work")


def test_absolute_paths_are_kept() -> None:
    config = parse(
        '[schedules.job]\nevery = "1m"\n' + ECHO + 'cwd = "/srv"\n',
        head=('[daemon]\nstate_dir = "/var/lib/schedd"\n'),
    )
    assert config.daemon.state_dir == Path("/var/lib/schedd")
    assert command_task(config.schedules[0]).cwd == "/srv"


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
    assert msg == "unknown key (known: format, level)"


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
        ("[dispatch]\nmax_ready = 0\n", "dispatch.max_ready", "integer >= 1, got 0"),
        ("[metrics]\nmax_schedules = -1\n", "metrics.max_schedules", "integer >= 0, got -1"),
        ('[metrics]\nmax_schedules = "100"\n', "metrics.max_schedules", 'integer >= 0, got "100"'),
        ("[metrics]\nmax_schedules = 1.5\n", "metrics.max_schedules", "integer >= 0, got 1.5"),
        ("[catchup]\nrate = 0\n", "catchup.rate", "expected a number > 0, got 0"),
        ('[catchup]\nrate = "10/s"\n', "catchup.rate", 'a number > 0, got "10/s"'),
        ("[catchup]\nrate = inf\n", "catchup.rate", "a number > 0, got inf"),
        ("[catchup]\nrate = true\n", "catchup.rate", "a number > 0, got true"),
        (
            "[catchup]\nmax_failure_ratio = 1.5\n",
            "catchup.max_failure_ratio",
            "a number > 0 and <= 1, got 1.5",
        ),
        (
            "[catchup]\nrate = 5\nmin_rate = 6\n",
            "catchup",
            "0 < min_rate <= rate <= max_rate, got 6.0, 5.0, 1000.0",
        ),
    ],
)
def test_wrong_type_or_range_names_the_key(body: str, key: str, msg: str) -> None:
    found_key, found_msg = only_problem(body)
    assert found_key == key
    assert msg in found_msg


def test_zero_max_schedules_is_allowed() -> None:
    assert parse("[metrics]\nmax_schedules = 0\n").metrics.max_schedules == 0


@pytest.mark.parametrize("mode", ["660", '"0999"', '"rw-rw----"', '"06600"', '"0o660"'])
def test_socket_mode_must_be_an_octal_string(mode: str) -> None:
    key, msg = only_problem(f"[admin]\nmode = {mode}\n")
    assert key == "admin.mode"
    assert msg.startswith('expected an octal permission string like "0660", got ')


def test_socket_mode_without_a_leading_zero_is_octal_too() -> None:
    assert parse('[admin]\nmode = "640"\n').admin.mode == 0o640


def test_admin_group_must_exist_on_this_host() -> None:
    key, msg = only_problem('[admin]\ngroup = "no-such-group-xyz"\n')
    assert (key, msg) == ("admin.group", 'no group "no-such-group-xyz" on this host')


def test_admin_roles_take_every_entry_form() -> None:
    config = parse(
        f'[admin]\nreaders = ["{HOST_USER}", "uid:1234", "group:{HOST_GROUP}", "gid:4321"]\n'
        "operators = []\n"
    )
    assert config.admin.readers == (HOST_USER, "uid:1234", f"group:{HOST_GROUP}", "gid:4321")
    assert config.admin.operators == ()


def test_every_bad_admin_role_entry_is_reported_at_its_index() -> None:
    found = problems(
        f'[admin]\nreaders = ["{HOST_USER}", "no-such-user-xyz", 5]\n'
        'operators = ["group:no-such-group-xyz", "uid:x", "user:root"]\n'
    )
    assert found == {
        "admin.readers[1]": 'no user "no-such-user-xyz" on this host (a uid without a name is'
        ' written "uid:N")',
        "admin.readers[2]": "expected a string, got 5",
        "admin.operators[0]": 'no group "no-such-group-xyz" on this host',
        "admin.operators[1]": '"uid:x": expected uid:N with N a number from 0 to 4294967294',
        "admin.operators[2]": '"user:root": unknown form; an entry is "NAME" (a user), "uid:N",'
        ' "group:NAME" or "gid:N"',
    }


def test_admin_roles_must_be_an_array() -> None:
    key, msg = only_problem('[admin]\noperators = "root"\n')
    assert key == "admin.operators"
    assert msg.startswith('expected an array like ["alice", "uid:1001", "group:ops", "gid:50"]')


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


@pytest.mark.parametrize("overlap", list(model.Overlap))
def test_every_overlap_policy_is_accepted(overlap: model.Overlap) -> None:
    spec = schedule(f'every = "1m"\noverlap = "{overlap.value}"\n' + ECHO)
    assert spec.policies.overlap is overlap


def test_unknown_overlap_policy_lists_all_four() -> None:
    key, msg = only_problem('[schedules.j]\nevery = "1m"\noverlap = "queue"\n' + ECHO)
    assert key == "schedules.j.overlap"
    assert msg == 'expected one of "skip", "queue_one", "allow", "replace", got "queue"'


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
    assert command_task(spec).env == {"PGHOST": "db"}


@pytest.mark.parametrize(
    ("task", "key", "msg"),
    [
        ("", "schedules.j", "missing the task: set command (the argv to run"),
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


# --- [workers]: the Python pool ---------------------------------------------------------------


def executable_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_relative_worker_python_and_pythonpath_resolve_against_the_config_dir(
    tmp_path: Path,
) -> None:
    python = executable_file(tmp_path / "venv" / "bin" / "python")
    config = parse_config(
        HEAD + '[workers]\npython = "venv/bin/python"\npythonpath = ["src", "/opt/lib"]\n',
        base_dir=tmp_path,
    )
    assert config.workers.python == str(python)
    assert config.workers.pythonpath == (str(tmp_path / "src"), "/opt/lib")


def test_worker_python_symlink_is_kept_as_written_so_the_venv_is_found(tmp_path: Path) -> None:
    link = tmp_path / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(sys.executable)
    config = parse_config(HEAD + f'[workers]\npython = "{link}"\n', base_dir=tmp_path)
    assert config.workers.python == str(link)


def test_missing_worker_python_is_refused_at_workers_python() -> None:
    key, msg = only_problem('[workers]\npython = "python3"\n')
    assert key == "workers.python"
    assert msg.startswith(f"{ETC / 'python3'} does not exist; give the interpreter's absolute")
    assert "PATH is not searched" in msg


def test_worker_python_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "python").write_text("")
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + '[workers]\npython = "python"\n', base_dir=tmp_path)
    assert info.value.problems == [("workers.python", f"{tmp_path / 'python'} is not executable")]


def test_worker_python_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + '[workers]\npython = "."\n', base_dir=tmp_path)
    assert info.value.problems == [("workers.python", f"{tmp_path / '.'} is not a file")]


def test_min_workers_above_max_is_refused_at_min() -> None:
    assert only_problem("[workers]\nmin = 3\nmax = 2\n") == (
        "workers.min",
        "min 3 is more than max 2",
    )


def test_min_workers_above_the_default_max_says_so() -> None:
    assert only_problem("[workers]\nmin = 5\n") == (
        "workers.min",
        "min 5 is more than max 4 (the default)",
    )


def test_min_workers_is_not_compared_with_a_refused_max() -> None:
    assert set(problems("[workers]\nmin = 5\nmax = 0\n")) == {"workers.max"}


def test_min_workers_may_equal_max() -> None:
    assert parse("[workers]\nmin = 2\nmax = 2\n").workers.min == 2


@pytest.mark.parametrize(
    ("body", "key", "msg"),
    [
        ("min = -1", "workers.min", "expected an integer >= 0, got -1"),
        ("max_tasks_per_worker = 0", "workers.max_tasks_per_worker", "integer >= 1, got 0"),
        ("max_worker_rss = 512", "workers.max_worker_rss", "at least 1048576 bytes, got 512"),
        ('max_worker_rss = "512"', "workers.max_worker_rss", "missing unit"),
        ("start_timeout = 30", "workers.start_timeout", 'write "30s"'),
        ('idle_timeout = "0s"', "workers.idle_timeout", "greater than zero"),
        ("python = 3", "workers.python", "expected a non-empty string, got 3"),
        ('pythonpath = "src"', "workers.pythonpath", 'array of directory paths, got "src"'),
        ('pythonpath = ["a", 1]', "workers.pythonpath[1]", "expected a string, got 1"),
        ('pythonpath = [""]', "workers.pythonpath[0]", "expected a non-empty string"),
        ('pythonpath = ["a:b"]', "workers.pythonpath[0]", "the separator of PYTHONPATH"),
        ('pythonpath = ["a\\u0000"]', "workers.pythonpath[0]", "NUL byte"),
    ],
)
def test_bad_worker_key_names_the_key(body: str, key: str, msg: str) -> None:
    found_key, found_msg = only_problem(f"[workers]\n{body}\n")
    assert found_key == key
    assert msg in found_msg


# --- [defaults]: retry, limits, on_quarantine, max_payload ------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "msg"),
    [
        ("[defaults.retry]\nmax_attempts = 0", "defaults.retry.max_attempts", "integer >= 1"),
        ("[defaults.retry]\nbase = 1", "defaults.retry.base", 'write "1s"'),
        ('[defaults.retry]\nmax = "0s"', "defaults.retry.max", "greater than zero"),
        (
            "[defaults.retry]\nmaxattempts = 3",
            "defaults.retry.maxattempts",
            'unknown key; did you mean "max_attempts"?',
        ),
        ("[defaults]\nretry = 3", "defaults.retry", "expected a table, got 3"),
        ("[defaults.limits]\nmemory = 512", "defaults.limits.memory", "at least 1048576 bytes"),
        (
            '[defaults.limits]\ncpu = "1.5s"',
            "defaults.limits.cpu",
            'must be whole seconds, at least 1s (the CPU limit counts seconds), got "1.5s"',
        ),
        ('[defaults.limits]\ncpu = "500ms"', "defaults.limits.cpu", "whole seconds, at least 1s"),
        ("[defaults.limits]\ncpu = 60", "defaults.limits.cpu", 'write "60s"'),
        ("[defaults.limits]\nopen_files = 0", "defaults.limits.open_files", "integer >= 1"),
        ('[defaults.limits]\ncore = "-1B"', "defaults.limits.core", "negative"),
        ("[defaults.limits]\nnofile = 5", "defaults.limits.nofile", "unknown key"),
        ("[defaults]\non_quarantine = []", "defaults.on_quarantine", "got an empty array"),
        (
            '[defaults]\non_quarantine = "page ops"',
            "defaults.on_quarantine",
            'expected a non-empty array of strings, got "page ops"',
        ),
        ('[defaults]\non_quarantine = ["page", 1]', "defaults.on_quarantine[1]", "got 1"),
        ('[defaults]\non_quarantine = ["", "x"]', "defaults.on_quarantine[0]", "program name"),
        ('[defaults]\nmax_payload = "1K"', "defaults.max_payload", 'unknown unit "K"'),
        ("[defaults]\nmax_payload = 0", "defaults.max_payload", "at least 1 bytes"),
    ],
)
def test_bad_default_policy_names_the_key(body: str, key: str, msg: str) -> None:
    found_key, found_msg = only_problem(body + "\n")
    assert found_key == key
    assert msg in found_msg


def test_a_zero_core_limit_is_allowed_and_memory_takes_sizes() -> None:
    config = parse('[defaults.limits]\ncore = 0\nmemory = "2GiB"\n')
    assert config.defaults.policies.limits == model.Limits(memory_bytes=2 * 1024**3, core_bytes=0)


def test_default_retry_fields_not_set_keep_the_built_in_values() -> None:
    config = parse("[defaults.retry]\nmax_attempts = 2\n")
    assert config.defaults.policies.retry == model.Retry(max_attempts=2)


def test_default_backoff_base_longer_than_max_is_refused_at_base() -> None:
    assert only_problem('[defaults.retry]\nbase = "10m"\nmax = "1m"\n') == (
        "defaults.retry.base",
        "base 10m is longer than max 1m",
    )


def test_default_backoff_max_below_the_built_in_base_is_refused_at_max() -> None:
    assert only_problem('[defaults.retry]\nmax = "500ms"\n') == (
        "defaults.retry.max",
        "base 1s is longer than max 500ms (base from schedd's built-in defaults)",
    )


def test_a_refused_backoff_base_is_not_compared_with_max() -> None:
    found = problems('[defaults.retry]\nbase = "soon"\nmax = "500ms"\n')
    assert set(found) == {"defaults.retry.base"}


# --- schedules: policies merged over [defaults] -------------------------------------------------


def test_schedule_retry_merges_field_by_field_over_the_defaults() -> None:
    config = parse(
        '[defaults.retry]\nmax_attempts = 7\nbase = "2s"\nmax = "1m"\n'
        '[schedules.j]\nevery = "1m"\nretry = { max_attempts = 2 }\n' + ECHO
    )
    assert config.schedules[0].policies.retry == model.Retry(
        max_attempts=2, base_ms=2_000, max_ms=60_000
    )


def test_schedule_limits_merge_field_by_field_over_the_defaults() -> None:
    config = parse(
        '[defaults.limits]\nmemory = "1GiB"\nopen_files = 64\n'
        '[schedules.j]\nevery = "1m"\n' + ECHO + '[schedules.j.limits]\ncpu = "30s"\n'
    )
    assert config.schedules[0].policies.limits == model.Limits(
        memory_bytes=1024**3, cpu_seconds=30, open_files=64
    )


def test_schedule_without_policy_tables_inherits_every_default_policy() -> None:
    config = parse(
        '[defaults]\non_quarantine = ["/bin/page"]\n[defaults.retry]\nmax_attempts = 9\n'
        '[schedules.j]\nevery = "1m"\n' + ECHO
    )
    assert config.schedules[0].policies == config.defaults.policies
    assert config.schedules[0].policies.on_quarantine == ("/bin/page",)


def test_schedule_on_quarantine_replaces_the_default() -> None:
    spec = schedule('every = "1m"\non_quarantine = ["/bin/mail", "ops"]\n' + ECHO)
    assert spec.policies.on_quarantine == ("/bin/mail", "ops")


def test_schedule_backoff_base_over_the_default_max_names_where_max_comes_from() -> None:
    key, msg = only_problem(
        '[defaults.retry]\nmax = "1m"\n[schedules.j]\nevery = "1m"\n'
        'retry = { base = "2m" }\n' + ECHO
    )
    assert key == "schedules.j.retry.base"
    assert msg == "base 2m is longer than max 1m (max from defaults.retry)"


def test_bad_schedule_retry_key_is_reported_inside_the_schedule() -> None:
    key, msg = only_problem('[schedules.j]\nevery = "1m"\nretry = { max_attempts = 0 }\n' + ECHO)
    assert key == "schedules.j.retry.max_attempts"
    assert msg == "expected an integer >= 1, got 0"


def test_max_payload_is_a_defaults_key_only() -> None:
    key, msg = only_problem('[schedules.j]\nevery = "1m"\nmax_payload = "1MiB"\n' + ECHO)
    assert key == "schedules.j.max_payload"
    assert msg.startswith("unknown key")


# --- tenants ------------------------------------------------------------------------------------


def test_tenants_are_read_with_their_retry_budgets() -> None:
    config = parse('[tenants.acme]\nretry_budget = "100/10m"\n[tenants.free-tier]\n')
    assert config.tenants == {
        "acme": TenantConfig("acme", Rate(100, 600_000)),
        "free-tier": TenantConfig("free-tier", None),
    }


def test_schedule_tenant_names_a_tenants_table() -> None:
    config = parse('[tenants.acme]\n[schedules.j]\nevery = "1m"\ntenant = "acme"\n' + ECHO)
    assert config.schedules[0].tenant == "acme"


def test_schedule_without_a_tenant_has_none() -> None:
    assert schedule('every = "1m"\n' + ECHO).tenant is None


def test_unknown_tenant_suggests_a_close_one() -> None:
    key, msg = only_problem('[tenants.acme]\n[schedules.j]\nevery = "1m"\ntenant = "acne"\n' + ECHO)
    assert key == "schedules.j.tenant"
    assert msg == 'unknown tenant "acne": there is no [tenants.acne] table; did you mean "acme"?'


def test_unknown_tenant_without_any_tenants_says_which_table_to_add() -> None:
    key, msg = only_problem('[schedules.j]\nevery = "1m"\ntenant = "acme"\n' + ECHO)
    assert (key, msg) == (
        "schedules.j.tenant",
        'unknown tenant "acme": there is no [tenants.acme] table',
    )


def test_a_tenant_with_a_bad_budget_is_reported_once_not_at_its_schedules() -> None:
    found = problems(
        '[tenants.acme]\nretry_budget = "lots"\n[schedules.j]\nevery = "1m"\ntenant = "acme"\n'
        + ECHO
    )
    assert set(found) == {"tenants.acme.retry_budget"}


@pytest.mark.parametrize(
    ("body", "key", "msg"),
    [
        (
            '[tenants.acme]\nretry_budget = "100"',
            "tenants.acme.retry_budget",
            'invalid rate "100": expected a rate like "100/10m"',
        ),
        (
            "[tenants.acme]\nretry_budget = 100",
            "tenants.acme.retry_budget",
            'expected a rate like "100/10m", got 100',
        ),
        (
            '[tenants.acme]\nretry_budget = "0/1m"',
            "tenants.acme.retry_budget",
            "whole number >= 1",
        ),
        ('[tenants.acme]\nbudget = "1/1m"', "tenants.acme.budget", 'did you mean "retry_budget"'),
        ("[tenants.Acme]", "tenants.Acme", 'invalid tenant name "Acme"'),
        ('[tenants]\nacme = "x"', "tenants.acme", 'expected a table, got "x"'),
    ],
)
def test_bad_tenant_names_the_key(body: str, key: str, msg: str) -> None:
    found_key, found_msg = only_problem(body + "\n")
    assert found_key == key
    assert msg in found_msg


# --- schedules: Python tasks --------------------------------------------------------------------


def test_python_task_with_json_args_and_kwargs() -> None:
    spec = schedule(
        'every = "1m"\npython = "myapp.jobs.mail:send_digest"\nargs = [1, "a", [true, 2.5]]\n'
        'kwargs = { region = "eu", opts = { dry_run = false } }\n'
    )
    assert spec.task == model.PythonTask(
        target="myapp.jobs.mail:send_digest",
        args=(1, "a", [True, 2.5]),
        kwargs={"region": "eu", "opts": {"dry_run": False}},
    )


def test_python_task_without_arguments() -> None:
    spec = schedule('every = "1m"\npython = "platform:python_version"\n')
    assert spec.task == model.PythonTask("platform:python_version")


def test_python_target_may_name_a_nested_attribute() -> None:
    spec = schedule('every = "1m"\npython = "app.tasks:Jobs.nightly"\n')
    assert isinstance(spec.task, model.PythonTask)
    assert spec.task.target == "app.tasks:Jobs.nightly"


@pytest.mark.parametrize(
    "target", ["myapp", "myapp:", ":run", "my-app:run", "app:run()", "app.:run", "a:b:c", ""]
)
def test_malformed_python_target_is_refused_with_the_expected_form(target: str) -> None:
    key, msg = only_problem(f'[schedules.j]\nevery = "1m"\npython = "{target}"\n')
    assert key == "schedules.j.python"
    assert msg.startswith('expected "package.module:function" (a module path, ":", a function)')
    assert msg.endswith(f'got "{target}"')


def test_dotted_python_target_without_a_colon_shows_where_the_colon_goes() -> None:
    _, msg = only_problem('[schedules.j]\nevery = "1m"\npython = "myapp.jobs.cleanup"\n')
    assert msg.endswith(
        '; separate the module from the function with ":", as in "myapp.jobs:cleanup"'
    )


@pytest.mark.parametrize(
    ("task", "key", "msg"),
    [
        ("args = 5", "schedules.j.args", "expected an array of JSON values, got 5"),
        ('kwargs = ["a"]', "schedules.j.kwargs", "expected a table of JSON values, got an array"),
        (
            'args = ["ok", 2027-01-01]',
            "schedules.j.args[1]",
            "2027-01-01 is a TOML date/time, which JSON cannot carry; "
            'write it as a string: "2027-01-01"',
        ),
        ("args = [[1, 09:30:00]]", "schedules.j.args[0][1]", "TOML date/time"),
        (
            "kwargs = { when = 2027-01-01T09:00:00Z }",
            "schedules.j.kwargs.when",
            '"2027-01-01T09:00:00+00:00"',
        ),
        ("kwargs = { a = { b = [nan] } }", "schedules.j.kwargs.a.b[0]", "not a finite number"),
        ("args = [inf]", "schedules.j.args[0]", "inf is not a finite number"),
        ("kwargs = { context = 1 }", "schedules.j.kwargs.context", "reserved"),
    ],
)
def test_bad_python_arguments_name_the_element(task: str, key: str, msg: str) -> None:
    found_key, found_msg = only_problem(
        f'[schedules.j]\nevery = "1m"\npython = "app:run"\n{task}\n'
    )
    assert found_key == key
    assert msg in found_msg


def test_every_non_json_argument_is_reported() -> None:
    found = problems(
        '[schedules.j]\nevery = "1m"\npython = "app:run"\nargs = [1979-05-27, 1, nan]\n'
        "kwargs = { t = 07:32:00 }\n"
    )
    assert set(found) == {"schedules.j.args[0]", "schedules.j.args[2]", "schedules.j.kwargs.t"}


def test_a_schedule_needs_exactly_one_task_kind() -> None:
    key, msg = only_problem('[schedules.j]\nevery = "1m"\npython = "app:run"\n' + ECHO)
    assert (key, msg) == ("schedules.j", "set exactly one of command, python (found both)")


def test_a_schedule_without_a_task_names_both_kinds() -> None:
    key, msg = only_problem('[schedules.j]\nevery = "1m"\n')
    assert key == "schedules.j"
    assert msg == (
        'missing the task: set command (the argv to run, e.g. ["/bin/echo", "hello"]) '
        'or python ("package.module:function")'
    )


@pytest.mark.parametrize(
    ("extra", "key"),
    [("shell = true", "shell"), ('cwd = "/srv"', "cwd"), ('env = { A = "1" }', "env")],
)
def test_command_only_keys_on_a_python_task_are_refused_at_the_key(extra: str, key: str) -> None:
    found_key, msg = only_problem(f'[schedules.j]\nevery = "1m"\npython = "app:run"\n{extra}\n')
    assert found_key == f"schedules.j.{key}"
    assert msg == (
        f"{key} is for command tasks only; a python task runs in a shared pool worker "
        "(configured in [workers])"
    )


@pytest.mark.parametrize(
    ("extra", "key"), [("args = [1]", "args"), ("kwargs = { a = 1 }", "kwargs")]
)
def test_python_only_keys_on_a_command_task_are_refused_at_the_key(extra: str, key: str) -> None:
    found_key, msg = only_problem(f'[schedules.j]\nevery = "1m"\n{ECHO}{extra}\n')
    assert found_key == f"schedules.j.{key}"
    assert msg == f"{key} is for python tasks only; a command's arguments are part of its argv"


# --- the payload cap ----------------------------------------------------------------------------

BIG = "x" * 70_000


def test_python_arguments_over_the_cap_are_refused_at_args_telling_to_pass_an_id() -> None:
    key, msg = only_problem(f'[schedules.j]\nevery = "1m"\npython = "app:run"\nargs = ["{BIG}"]\n')
    assert key == "schedules.j.args"
    assert msg.startswith("task arguments are 68.4KiB, over the 64KiB limit (defaults.max_payload)")
    assert "pass an id" in msg


def test_python_kwargs_alone_over_the_cap_are_refused_at_kwargs() -> None:
    key, _ = only_problem(
        f'[schedules.j]\nevery = "1m"\npython = "app:run"\nkwargs = {{ blob = "{BIG}" }}\n'
    )
    assert key == "schedules.j.kwargs"


def test_command_over_the_cap_is_refused_at_command() -> None:
    key, msg = only_problem(f'[schedules.j]\nevery = "1m"\ncommand = ["/bin/echo", "{BIG}"]\n')
    assert key == "schedules.j.command"
    assert "over the 64KiB limit" in msg


def test_a_raised_max_payload_lets_bigger_arguments_through() -> None:
    config = parse(
        f'[defaults]\nmax_payload = "1MiB"\n[schedules.j]\nevery = "1m"\n'
        f'python = "app:run"\nargs = ["{BIG}"]\n'
    )
    assert config.schedules[0].task == model.PythonTask("app:run", (BIG,))


def test_a_lowered_max_payload_applies_to_small_commands() -> None:
    key, msg = only_problem('[defaults]\nmax_payload = 10\n[schedules.j]\nevery = "1m"\n' + ECHO)
    assert key == "schedules.j.command"
    assert "over the 10B limit" in msg


# --- the shipped example ------------------------------------------------------------------------


def test_the_example_config_parses_cleanly_with_all_three_trigger_kinds() -> None:
    config = load_config(EXAMPLE)
    assert config.daemon.state_dir == EXAMPLE.parent / "state"
    kinds = {type(s.trigger) for s in config.schedules}
    assert kinds == {model.CronSpec, model.IntervalSpec, model.OnceSpec}
    crons = [s.trigger for s in config.schedules if isinstance(s.trigger, model.CronSpec)]
    assert [c.timezone for c in crons] == ["Europe/Berlin"]
    commands = [s.task for s in config.schedules if isinstance(s.task, model.CommandTask)]
    assert any(task.shell for task in commands)
    for task in commands:
        assert task.shell or Path(task.argv[0]).is_file(), task.argv[0]


def reference_rows(heading: str) -> set[str]:
    """The keys with a table row under ``heading`` in docs/configuration.md, up to the next ##."""
    body = REFERENCE.read_text().split(f"`[{heading}]`\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", body, re.MULTILINE))


#: A schedule's policy keys are documented once, under [defaults], which the schedule refers to.
SCHEDULE_ONLY = set(config_schema.SCHEDULE) - set(config_schema.DEFAULTS)


@pytest.mark.parametrize(
    ("heading", "keys"),
    [
        *((name, set(keys)) for name, keys in config_schema.SECTIONS.items() if keys),
        ("defaults.retry", set(config_schema.RETRY)),
        ("defaults.limits", set(config_schema.LIMITS)),
        ("tenants.NAME", set(config_schema.TENANT)),
        ("schedules.NAME", SCHEDULE_ONLY),
    ],
)
def test_every_key_has_a_row_in_the_reference(heading: str, keys: set[str]) -> None:
    assert keys - reference_rows(heading) == set()


def test_the_examples_python_task_names_a_stdlib_function() -> None:
    config = load_config(EXAMPLE)
    (task,) = [s.task for s in config.schedules if isinstance(s.task, model.PythonTask)]
    module, function = task.target.split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_every_commented_key_in_the_example_is_valid_when_uncommented() -> None:
    lines = [
        m.group(1) if (m := re.fullmatch(r"# (\[[a-z._]+\]|[a-z_]+ = .*)", line)) else line
        for line in EXAMPLE.read_text().splitlines()
    ]
    assert sum(line.startswith("# ") for line in lines) > 0, "only prose stays commented"
    text = "\n".join(lines).replace("/opt/myapp/venv/bin/python", sys.executable)
    # The example's user and group are a production host's; they must exist where it is read.
    here = {"alice": HOST_USER, "schedd": HOST_GROUP, "group:schedd": f"group:{HOST_GROUP}"}
    for name, local in here.items():
        text = text.replace(f'"{name}"', f'"{local}"')
    config = parse_config(text, base_dir=EXAMPLE.parent)
    assert config.admin.group == HOST_GROUP
    assert config.admin.readers == (f"group:{HOST_GROUP}",)
    assert config.admin.operators == (HOST_USER, "uid:1001")
    assert config.workers.pythonpath == ("/opt/myapp/src",)
    assert config.tenants["reports"].retry_budget == Rate(100, 600_000)
    assert config.defaults.policies.limits.open_files == 1024
