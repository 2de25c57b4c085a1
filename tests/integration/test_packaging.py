"""The artefacts a user installs: the sdist and wheel, and schedd.pyz in both its roles.

The pyz is built once per module from this checkout and this environment, as
docs/packaging.md says, and started with ``-S`` (no site-packages) wherever the test can
choose the interpreter line: what it runs then comes from the archive or the standard library,
so a dependency missing from the archive fails here instead of on a user's host.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import schedd

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "packaging" / "build_pyz.py"
#: The test's interpreter first on PATH, so the archive's ``#!/usr/bin/env python3`` finds it.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(*cmd: str | Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=ENV | env
    )
    assert result.returncode == 0, (cmd, result.returncode, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("pyz") / "schedd.pyz"
    run(sys.executable, BUILDER, "-o", target)
    (target.parent / "schedctl").symlink_to(target.name)
    return target


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    """packaging/build_pyz.py, loaded from its file: ``packaging`` is PyPA's package name."""
    spec = importlib.util.spec_from_file_location("build_pyz", BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyz_answers_version_as_schedd_and_as_schedctl(pyz: Path) -> None:
    assert run(pyz, "--version").stdout == f"schedd {schedd.__version__}\n"
    assert run(pyz.parent / "schedctl", "--version").stdout == f"schedctl {schedd.__version__}\n"
    assert run(pyz, "schedctl", "--version").stdout == f"schedctl {schedd.__version__}\n"
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_pyz_holds_schedd_and_its_dependencies_and_nothing_compiled(pyz: Path) -> None:
    names = zipfile.ZipFile(pyz).namelist()
    tops = {name.split("/")[0] for name in names}
    for package in ("__main__.py", "schedd", "typer", "rich", "croniter", "prometheus_client"):
        assert package in tops
    assert "schedd/py.typed" in names
    assert "schedd/cli/pyz.pyc" in names  # bytecode beside the source: no compile per start
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith("/RECORD")]


def test_pyz_needs_no_site_packages(pyz: Path) -> None:
    example = REPO / "schedd.toml.example"
    checked = run(sys.executable, "-I", "-S", pyz, "check-config", example)
    assert checked.stdout.startswith(f"{example}: ok (")
    helped = run(sys.executable, "-I", "-S", pyz, "schedctl", "runs", "list", "--help")
    assert "Usage: schedctl runs list" in helped.stdout


def test_pyz_reports_an_invalid_config_as_schedd_does(pyz: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[daemon]\nstate_dir = "s"\n[schedules.x]\nevery = "1s"\n')
    result = subprocess.run(
        [str(pyz), "check-config", str(bad)], capture_output=True, text=True, env=ENV
    )
    assert result.returncode == 1
    assert "schedules.x" in result.stderr


def test_pyz_completes_each_role_under_its_own_name(pyz: Path) -> None:
    """typer's completion is keyed by the program's name: the link must complete as schedctl.

    The script is asked for as docs/packaging.md does, by the variable: ``--show-completion``
    detects the shell among its parent processes, and fails where none is a shell."""
    script = run(pyz.parent / "schedctl", _SCHEDCTL_COMPLETE="source_bash").stdout
    assert "_SCHEDCTL_COMPLETE=complete_bash" in script
    assert script.rstrip().endswith(" schedctl")
    # What the installed script does on <Tab>: run the program with the words so far.
    words = {"COMP_WORDS": "schedctl runs w", "COMP_CWORD": "2"}
    completed = run(pyz.parent / "schedctl", _SCHEDCTL_COMPLETE="complete_bash", **words)
    assert completed.stdout.split() == ["wait"]
    words = {"COMP_WORDS": "schedd check", "COMP_CWORD": "1"}
    completed = run(pyz, _SCHEDD_COMPLETE="complete_bash", **words)
    assert completed.stdout.split() == ["check-config"]


@pytest.fixture
def pyz_daemon(pyz: Path, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon started from the archive with a past one-shot Python task, which it runs once."""
    tasks = workdir / "tasks"
    tasks.mkdir()
    (tasks / "probe.py").write_text(
        "import json, sys\n\n\n"
        "def report(word):\n"
        "    print(json.dumps({'word': word, 'path': sys.path}))\n"
    )
    (workdir / "schedd.toml").write_text(
        '[daemon]\nstate_dir = "state"\n'
        '[workers]\nmax = 2\npythonpath = ["tasks"]\n'
        "[schedules.probe]\n"
        'at = "2020-01-01T00:00:00Z"\npython = "probe:report"\nargs = ["hello"]\n'
        "retry = { max_attempts = 1 }\n"
    )
    with (workdir / "daemon.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-S", str(pyz), "run", "--config", str(workdir / "schedd.toml")],
            stdout=log,
            stderr=log,
            cwd=workdir,
            env=ENV,
        )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_pyz_daemon_runs_a_python_task_and_its_schedctl_sees_it(
    pyz: Path, workdir: Path, pyz_daemon: subprocess.Popen[bytes]
) -> None:
    ctl = [pyz.parent / "schedctl", "--socket", workdir / "state" / "schedd.sock"]
    wait = [*ctl, "runs", "wait", "--schedule", "probe", "--timeout", "30s", "--json"]
    deadline = time.monotonic() + 30
    while True:  # until the daemon listens (7: not running yet), then until the run is done
        waited = subprocess.run([str(c) for c in wait], capture_output=True, text=True, env=ENV)
        if waited.returncode != 7:
            break
        assert pyz_daemon.poll() is None, (workdir / "daemon.log").read_text()
        assert time.monotonic() < deadline, (workdir / "daemon.log").read_text()
    assert waited.returncode == 0, (waited.stderr, (workdir / "daemon.log").read_text())
    assert json.loads(waited.stdout)["done"] is True

    runs = json.loads(run(*ctl, "runs", "list", "--schedule", "probe", "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["succeeded"], runs
    [probe] = runs
    seen: dict[str, Any] = json.loads(run(*ctl, "runs", "output", str(probe["id"])).stdout)
    assert seen["word"] == "hello"
    # The archive (and with it schedd's own typer, rich, ...) is off the task's sys.path.
    assert not [p for p in seen["path"] if "schedd.pyz" in p], seen["path"]
    assert str(workdir / "tasks") in seen["path"]

    pyz_daemon.send_signal(signal.SIGTERM)
    assert pyz_daemon.wait(timeout=60) == 0


def test_sdist_and_the_wheel_built_from_it_carry_what_users_need(tmp_path: Path) -> None:
    run(sys.executable, "-m", "build", "--outdir", tmp_path, REPO, timeout=300)
    [sdist] = tmp_path.glob("schedd-*.tar.gz")
    with tarfile.open(sdist) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in (
        "README.md",
        "schedd.toml.example",
        "docs/configuration.md",
        "docs/packaging.md",
        "systemd/schedd.service",
        "packaging/build_pyz.py",
        "schedd/py.typed",
        "tests/integration/test_packaging.py",
    ):
        assert name in shipped, name
    [wheel] = tmp_path.glob("schedd-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            line.split(":", 1)[1].strip()
            for line in whl.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line
        ]
        [scripts] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = whl.read(scripts).decode()
    assert {"schedd/py.typed", "schedd/cli/pyz.py", "schedd/workers/pyworker.py"} <= names
    assert any(r.startswith("prometheus_client") for r in requires), requires
    assert "schedctl = schedd.cli.schedctl:main" in entry_points


def test_builder_refuses_a_dependency_with_a_compiled_module(
    builder: ModuleType, tmp_path: Path
) -> None:
    info = tmp_path / "fast-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fast\nVersion: 1.0\n")
    (info / "RECORD").write_text(
        "fast/__init__.py,,\nfast/_speedups.cpython-311-x86_64-linux-gnu.so,,\n"
    )
    dist = importlib.metadata.PathDistribution(info)
    with pytest.raises(builder.BuildError, match=r"fast 1\.0 has a compiled module"):
        list(builder.dist_files(dist))


def test_builder_refuses_an_installed_version_the_requirements_exclude(
    builder: ModuleType,
) -> None:
    installed = importlib.metadata.version("typer")
    with pytest.raises(builder.BuildError, match=f"typer {installed} is installed"):
        builder.closure([f"typer!={installed}"])


def test_pyz_entry_stays_valid_python_3_9(builder: ModuleType) -> None:
    """A pool worker runs the archive's entry under the application's interpreter, maybe 3.9."""
    import ast

    ast.parse(builder.MAIN, feature_version=(3, 9))
    ast.parse((REPO / "schedd" / "cli" / "pyz.py").read_text(), feature_version=(3, 9))
