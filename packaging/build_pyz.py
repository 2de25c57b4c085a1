"""Build ``schedd.pyz``: schedd and its pure-Python dependencies in one executable zip.

    python packaging/build_pyz.py -o dist/schedd.pyz

It packs the checkout this script is in: schedd's package beside it, and each distribution in
the closure of the ``dependencies`` of its ``pyproject.toml`` (markers evaluated for this
interpreter), taken from the environment this runs in, from the files its installer recorded.
So it needs those dependencies installed, in versions the requirements accept (``pip install
-e .`` does that), and ``packaging`` importable (it comes with ``.[test]``). No network, no pip,
no build backend. See docs/packaging.md.

A zip can hold only what Python imports from a zip: pure-Python modules. A dependency that
ships a compiled extension is refused, with the distribution and file named, instead of
producing an archive that fails at its first import on some other host.

The archive is reproducible: entries are sorted and carry a fixed timestamp
(``SOURCE_DATE_EPOCH`` when set), so the same environment gives the same bytes.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.metadata as md
import importlib.util
import marshal
import os
import stat
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGE = "schedd"
SHEBANG = "/usr/bin/env python3"
#: The archive's entry: it only hands over to schedd/cli/pyz.py, and must stay valid Python 3.9
#: (a pool worker runs the archive under the application's interpreter).
MAIN = b"from schedd.cli.pyz import main\n\nmain()\n"
#: Suffixes of modules Python cannot import from a zip.
COMPILED = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".dylib")
#: dist-info files that describe the build host's installation, not the distribution.
INSTALL_RECORDS = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
#: The files of schedd's own package that go in (what the wheel ships too).
OWN_SUFFIXES = (".py", ".typed")
#: zip's epoch: the earliest timestamp an entry can carry.
ZIP_EPOCH = 315532800


class BuildError(Exception):
    pass


def closure(requirements: list[str]) -> list[md.Distribution]:
    """The installed distributions ``requirements`` need, transitively, for this interpreter."""
    seen: dict[str, md.Distribution] = {}
    todo = [Requirement(line) for line in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise BuildError(f"{req} is required but not installed here") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise BuildError(f"{req} is required but {req.name} {dist.version} is installed")
        name = canonicalize_name(dist.metadata["Name"])
        if name not in seen:
            seen[name] = dist
            todo.extend(Requirement(line) for line in dist.requires or ())
    return [seen[name] for name in sorted(seen)]


def dist_files(dist: md.Distribution) -> Iterator[tuple[str, Path]]:
    """``(name in the archive, file)`` of what ``dist`` installed into its import directory."""
    name = dist.metadata["Name"]
    if dist.files is None:
        raise BuildError(f"{name}: its installer left no file list (RECORD)")
    for entry in dist.files:
        parts = PurePosixPath(str(entry)).parts
        if parts[0] == ".." or "__pycache__" in parts or entry.suffix == ".pyc":
            continue  # scripts in bin/, and bytecode for this interpreter only
        if parts[0].endswith(".dist-info") and parts[-1] in INSTALL_RECORDS:
            continue
        if str(entry).endswith(COMPILED):
            raise BuildError(
                f"{name} {dist.version} has a compiled module ({entry}): a zipapp can hold only "
                "pure-Python code; install a pure-Python version of it (see docs/packaging.md)"
            )
        yield str(PurePosixPath(*parts)), Path(str(entry.locate()))


def own_files(top: Path) -> Iterator[tuple[str, Path]]:
    """The files of the package at ``top`` that the wheel ships too."""
    for path in sorted(top.rglob("*")):
        if path.is_file() and path.suffix in OWN_SUFFIXES and "__pycache__" not in path.parts:
            yield str(PurePosixPath(top.name, *path.relative_to(top).parts)), path


def entries(checkout: Path) -> tuple[dict[str, Path], list[md.Distribution]]:
    """What goes into the archive (by name in it), and the distributions it came from."""
    project = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]
    dists = closure(project.get("dependencies", []))
    found: dict[str, Path] = {}
    for source in [own_files(checkout / PACKAGE), *map(dist_files, dists)]:
        for arcname, path in source:
            if arcname in found and found[arcname] != path:
                raise BuildError(f"{arcname} comes from both {found[arcname]} and {path}")
            found[arcname] = path
    return found, dists


def bytecode(source: bytes, filename: str) -> bytes | None:
    """An unchecked hash-based ``.pyc`` of ``source`` for this interpreter (PEP 552).

    zipimport reads ``mod.pyc`` next to ``mod.py`` and cannot write bytecode caches, so without
    these every start would compile typer, rich and schedd again (a third of a second for a
    ``schedctl`` call or a shell completion). Another Python version rejects the magic number
    and falls back to the source beside it. Unchecked, because the archive never changes.
    """
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError:  # a file this interpreter cannot compile: leave it to the source
        return None
    flags = 0b01  # hash-based, source not checked
    header = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
    return header + importlib.util.source_hash(source) + marshal.dumps(code)


def write_pyz(target: Path, files: dict[str, Path], shebang: str) -> int:
    """Write the archive atomically; return how many entries it has."""
    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", ZIP_EPOCH)), ZIP_EPOCH)
    stamp = time.gmtime(epoch)[:6]

    def add(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
        info = zipfile.ZipInfo(arcname, date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        zf.writestr(info, data)

    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        out.write(f"#!{shebang}\n".encode())
        with zipfile.ZipFile(out, "w") as zf:
            add(zf, "__main__.py", MAIN)
            for arcname in sorted(files):
                data = files[arcname].read_bytes()
                add(zf, arcname, data)
                if arcname.endswith(".py"):
                    code = bytecode(data, f"{target.name}/{arcname}")
                    if code is not None:
                        add(zf, arcname + "c", code)
        count = len(zf.infolist())
    partial.chmod(0o755)
    partial.replace(target)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("dist/schedd.pyz"))
    parser.add_argument(
        "--python", default=SHEBANG, help=f"the interpreter line [default: {SHEBANG}]"
    )
    args = parser.parse_args(argv)
    try:
        files, dists = entries(CHECKOUT)
    except BuildError as exc:
        print(f"build_pyz: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    count = write_pyz(args.output, files, args.python)
    bundled = ", ".join(f"{d.metadata['Name']} {d.version}" for d in dists)
    size = args.output.stat().st_size // 1024
    print(f"{args.output}: {count} entries, {size} KiB; bundled: {bundled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
