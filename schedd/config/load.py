"""The entry points: a file or a string in, a validated :class:`Config` or a ConfigError out."""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from pathlib import Path

from schedd.config.build import build
from schedd.config.sections import Config
from schedd.config.walk import At, Ctx
from schedd.errors import ConfigError


def load_config(path: Path) -> Config:
    """Read and validate ``path``; relative paths inside resolve against its directory.

    Raises :class:`ConfigError` (``source`` = the file name) listing every problem found.
    """
    path = path.absolute()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError([("", f"cannot read the config file: {e.strerror}")], str(path)) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([("", f"not valid UTF-8 (byte {e.start})")], str(path)) from e
    config = parse_config(text, source=str(path), base_dir=path.parent)
    return dataclasses.replace(config, path=path)


def parse_config(text: str, *, source: str = "<string>", base_dir: Path) -> Config:
    """Validate TOML ``text`` as if it were a file in ``base_dir``; ``Config.path`` is None."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("", f"invalid TOML: {e}")], source) from e
    ctx = Ctx(base_dir.absolute())
    config = build(doc, At("", ctx), hashlib.sha256(text.encode("utf-8")).hexdigest())
    if ctx.problems:
        raise ConfigError(ctx.problems, source)
    return config


def config_socket_path(path: Path) -> Path:
    """The admin socket a daemon started with ``path`` listens on (for ``schedctl --config``).

    The whole file is validated: a client reading a broken config would otherwise guess a
    socket the daemon, refusing the same file, never opened.
    """
    return load_config(path).admin.socket
