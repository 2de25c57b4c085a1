"""``schedd.toml``: read, validate strictly, and turn into frozen dataclasses.

The failure this package exists to prevent is the *silent fallback*: a typo such as
``misfire_gracee = "10m"`` that a lenient loader ignores, so the schedule quietly runs with the
default grace and the mistake surfaces months later as a skipped payment run. So:

* **Every key is known.** Each section is a small schema table (TOML key → dataclass field and
  converter); an unknown key or section is an error with a ``difflib`` "did you mean".
* **Every problem, in one pass.** Converters never raise out of the walk: each problem is
  recorded with its dotted key (``schedules.backup.retry.base``), and one :class:`ConfigError`
  carries them all, so an operator fixes a file once instead of once per mistake. A value that
  fails is left out, so the dataclass default fills its place, but a config with any problem
  is never returned.
* **The same rules as the API.** Names, triggers, instants and the payload cap go through the
  functions the admin API uses, so a schedule the config accepts is one the API would accept.
* **Inheritance is field by field.** ``[defaults]`` sets policies for every schedule; a
  schedule overrides single keys, including single fields of ``retry`` and ``limits``.

Relative paths (``state_dir``, ``store.path``, ``admin.socket``, ``workers.python``,
``workers.pythonpath``, a schedule's ``cwd``) resolve against the directory of the config file,
not the daemon's working directory: systemd starts schedd in ``/``, a developer starts it in a
checkout, and the file should mean the same in both.

The modules, in the order data flows through them:

==================  ===========================================================================
``load``            the entry points: file or text → :class:`Config` or :class:`ConfigError`
``build``           the document, section by section, in dependency order
``schedules``       one ``[schedules.NAME]`` table → ``model.ScheduleSpec``
``tasks``           its task (command or Python) and the payload cap
``policies``        ``[defaults]`` and schedule policies merged over what they inherit
``schema``          the key tables: TOML key → field and converter
``convert``         the converters, one per kind of value
``walk``            dotted keys, the shared problem list, reading a table by its schema
``sections``        the resulting frozen dataclasses
==================  ===========================================================================

Adding a key is a line in ``schema`` and a field in ``sections``; a section is also an entry in
``SECTIONS`` and one line in ``build``. The reference for users is ``docs/configuration.md``.
"""

from schedd.config.load import config_socket_path, load_config, parse_config
from schedd.config.sections import (
    MAX_SOCKET_PATH_BYTES,
    AdminConfig,
    Config,
    DaemonConfig,
    Defaults,
    HeartbeatConfig,
    LoggingConfig,
    MetricsConfig,
    StoreConfig,
    TenantConfig,
    WorkersConfig,
)

__all__ = [
    "MAX_SOCKET_PATH_BYTES",
    "AdminConfig",
    "Config",
    "DaemonConfig",
    "Defaults",
    "HeartbeatConfig",
    "LoggingConfig",
    "MetricsConfig",
    "StoreConfig",
    "TenantConfig",
    "WorkersConfig",
    "config_socket_path",
    "load_config",
    "parse_config",
]
