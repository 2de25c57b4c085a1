"""Assembling a :class:`Config` from a parsed TOML document, section by section.

Sections are read in dependency order: ``[daemon]`` first (its ``state_dir`` places the store
and the socket), ``[workers]`` before the ``[lanes]`` that divide its slots, ``[defaults]``,
``[tenants]`` and ``[lanes]`` before the schedules that use them. A section with problems still
yields a stand-in built from defaults, so the sections after it are checked too; the caller
never returns a config once a problem was recorded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from schedd import model
from schedd.catchup import CatchupSettings
from schedd.config.convert import report_bad_name
from schedd.config.policies import BUILT_IN, merge_policies
from schedd.config.schedules import build_schedule
from schedd.config.schema import LANE, SECTIONS, TENANT
from schedd.config.sections import (
    MAX_SOCKET_PATH_BYTES,
    AdminConfig,
    Config,
    DaemonConfig,
    Defaults,
    DispatchConfig,
    HeartbeatConfig,
    LoggingConfig,
    MetricsConfig,
    StoreConfig,
    TenantConfig,
    WorkersConfig,
)
from schedd.config.walk import At, as_table, did_you_mean, read
from schedd.lanes import DEFAULT_LANE, Lane, with_default


def build(doc: Mapping[str, object], root: At, sha256: str) -> Config:
    _report_unknown_sections(doc, root)
    sections = {name: as_table(doc.get(name, {}), root / name) for name in SECTIONS}

    def values(name: str) -> dict[str, Any]:
        table = sections[name]
        return {} if table is None else read(table, SECTIONS[name], root / name)

    def raw(name: str) -> dict[str, Any]:
        return sections[name] or {}

    daemon_values = values("daemon")
    state_dir_ok = "state_dir" in daemon_values
    # A missing or invalid state_dir is already reported; the stand-in only lets the walk go on.
    state_dir: Path = daemon_values.setdefault("state_dir", root.ctx.base_dir)
    # Problems are reported in the order of the sections in SECTIONS.
    daemon = DaemonConfig(**daemon_values)
    store = StoreConfig(**{"path": state_dir / "schedd.db", **values("store")})
    admin = _admin(values("admin"), state_dir, state_dir_ok, root / "admin")
    workers_values = values("workers")
    workers = _workers(workers_values, raw("workers"), root / "workers")
    # A refused max's stand-in is no bound to hold the lanes' reservations to.
    capacity = workers.max if _max_ok(workers_values, raw("workers")) else None
    dispatch = DispatchConfig(**values("dispatch"))
    catchup = _catchup(values("catchup"), root / "catchup")
    logging = LoggingConfig(**values("logging"))
    metrics = MetricsConfig(**values("metrics"))
    heartbeat = HeartbeatConfig(**values("heartbeat"))
    defaults = _defaults(values("defaults"), root / "defaults")
    tenants = _tenants(raw("tenants"), root / "tenants")
    lanes = _lanes(raw("lanes"), capacity, "max" in workers_values, root / "lanes")
    return Config(
        path=None,
        sha256=sha256,
        daemon=daemon,
        store=store,
        admin=admin,
        workers=workers,
        logging=logging,
        defaults=defaults,
        metrics=metrics,
        heartbeat=heartbeat,
        tenants=MappingProxyType(tenants),
        lanes=MappingProxyType(lanes),
        schedules=_schedules(
            raw("schedules"),
            defaults,
            raw("tenants"),
            {DEFAULT_LANE, *raw("lanes")},
            root / "schedules",
        ),
        dispatch=dispatch,
        catchup=catchup,
    )


def _report_unknown_sections(doc: Mapping[str, object], root: At) -> None:
    # Offer "daemon.state_dir" too: a key above the first [header] is a common slip.
    known = [*SECTIONS, *(f"{s}.{k}" for s, schema in SECTIONS.items() for k in schema)]
    for name, value in doc.items():
        if name not in SECTIONS:
            what = "unknown section" if isinstance(value, dict) else "unknown key"
            (root / name).problem(what + did_you_mean(name, known))


def _catchup(values: dict[str, Any], at: At) -> CatchupSettings:
    try:
        return CatchupSettings(**values)
    except ValueError as e:
        at.problem(str(e))
        return CatchupSettings()


def _admin(values: dict[str, Any], state_dir: Path, state_dir_ok: bool, at: At) -> AdminConfig:
    admin = AdminConfig(**{"socket": state_dir / "schedd.sock", **values})
    socket_bytes = len(bytes(admin.socket))
    # A default socket under a refused state_dir is a stand-in: do not report it too.
    if socket_bytes > MAX_SOCKET_PATH_BYTES and ("socket" in values or state_dir_ok):
        (at / "socket").problem(
            f"{admin.socket} is {socket_bytes} bytes, over the {MAX_SOCKET_PATH_BYTES}-byte "
            "limit for Unix socket paths; set admin.socket to a shorter path"
        )
    return admin


def _workers(values: dict[str, Any], table: Mapping[str, object], at: At) -> WorkersConfig:
    workers = WorkersConfig(**values)
    if "min" in values and _max_ok(values, table) and workers.min > workers.max:
        note = "" if "max" in values else " (the default)"
        (at / "min").problem(f"min {workers.min} is more than max {workers.max}{note}")
    return workers


def _max_ok(values: dict[str, Any], table: Mapping[str, object]) -> bool:
    """Whether ``workers.max`` is the user's own or the default, not a refused value's stand-in."""
    return "max" in values or "max" not in table


def _defaults(values: dict[str, Any], at: At) -> Defaults:
    policies = merge_policies(model.Policies(), values, at, BUILT_IN)
    return Defaults(policies=policies, **values)


def _tenants(section: Mapping[str, object], at: At) -> dict[str, TenantConfig]:
    tenants: dict[str, TenantConfig] = {}
    for name, value in section.items():
        report_bad_name(name, "tenant name", at / name)
        table = as_table(value, at / name)
        if table is not None:
            tenants[name] = TenantConfig(name, **read(table, TENANT, at / name))
    return tenants


def _lanes(
    section: Mapping[str, object], capacity: int | None, own_max: bool, at: At
) -> dict[str, Lane]:
    """The lanes, ``default`` included; ``capacity`` is ``workers.max`` (None: it was refused)."""
    before = at.problem_count()
    lanes: dict[str, Lane] = {}
    for name, value in section.items():
        report_bad_name(name, "lane name", at / name)
        table = as_table(value, at / name)
        if table is not None:
            lanes[name] = Lane(**read(table, LANE, at / name))
    lanes = with_default(lanes)
    if capacity is not None and at.problem_count() == before:
        _check_reservations(lanes, capacity, own_max, at)
    return lanes


def _check_reservations(lanes: Mapping[str, Lane], capacity: int, own_max: bool, at: At) -> None:
    """Reservations must fit in ``workers.max`` and leave a slot to every unreserved lane.

    A lane with no reservation lives on the shared slots alone; if the others reserve them all
    it never runs, silently, and ``default`` (ad-hoc work, schedules naming no lane) is such a
    lane unless it reserves some. Reported at the last ``reserved`` key, where the sum tips.
    """
    holders = [name for name, lane in lanes.items() if lane.reserved]
    total = sum(lanes[name].reserved for name in holders)
    unreserved = sorted(name for name, lane in lanes.items() if not lane.reserved)
    over, starved = total > capacity, total == capacity and bool(unreserved)
    if not (over or starved):
        return
    parts = ", ".join(f"{name} {lanes[name].reserved}" for name in holders)
    limit = f"workers.max {capacity}" + ("" if own_max else " (the default)")
    if over:
        message = f"the lanes reserve {total} slots in all ({parts}), more than {limit}"
    else:
        message = (
            f"the lanes reserve all {total} slots of {limit} ({parts}), so lane(s)"
            f" {', '.join(unreserved)} with no reservation could never run"
        )
    (at / holders[-1] / "reserved").problem(message)


def _schedules(
    section: Mapping[str, object],
    defaults: Defaults,
    tenants: Collection[str],
    lanes: Collection[str],
    at: At,
) -> tuple[model.ScheduleSpec, ...]:
    specs = []
    for name, value in section.items():
        table = as_table(value, at / name)
        spec = (
            None
            if table is None
            else build_schedule(
                name, table, defaults, tenants, lanes, at / name, model.Source.CONFIG
            )
        )
        if spec is not None:
            specs.append(spec)
    return tuple(specs)
