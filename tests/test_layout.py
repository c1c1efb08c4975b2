"""The layout: ARCHITECTURE.md, the README's layout table, the import-linter contracts and the tree agree.

* every top-level package folder of the repository is a room of ARCHITECTURE.md and a row of the README's layout
  table, and each one but ``fixloop`` (and ``tests``) is linked into ``fixloop/`` under its own name, so it is
  installed as ``fixloop.<name>``;
* the layers written in ARCHITECTURE.md are exactly the ``layers`` contract in ``pyproject.toml``, and every
  package or module named there exists;
* the contracts hold (``lint-imports``, run here so that ``make test`` fails on an import against the floors).
"""

from __future__ import annotations

import re
import subprocess
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
IMPORTLINTER = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def top_level_packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py")}


def table_paths(text: str, heading: str) -> set[str]:
    """The folders (```folder/```) named in the rows of the Markdown table under ``heading``."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return {m for row in rows for m in re.findall(r"`([\w./-]+)/`", row)}


def architecture_layers() -> list[str]:
    block = ARCHITECTURE.split("The layers, top to bottom", 1)[1].split("```", 2)[1]
    return [line.strip() for line in block.strip().splitlines()]


def module_exists(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def test_every_top_level_package_is_a_room_linked_into_the_namespace() -> None:
    packages = top_level_packages() - {"tests"}
    assert packages == {"fixloop", "workflows", "activities", "integrations", "sandbox"}
    for name in packages - {"fixloop"}:
        link = ROOT / "fixloop" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), f"fixloop/{name} -> ../{name}"
    rooms = table_paths(ARCHITECTURE, "## The rooms")
    readme = table_paths(README, "## Layout")
    for name in packages - {"fixloop"}:
        assert name in rooms and name in readme, name
    assert {"fixloop/core", "fixloop/app"} <= rooms and {"fixloop/core", "fixloop/app"} <= readme


def test_the_layers_of_architecture_md_are_the_import_linter_contract() -> None:
    (layers,) = [c["layers"] for c in IMPORTLINTER["contracts"] if c["type"] == "layers"]
    assert architecture_layers() == layers
    named = {m for c in IMPORTLINTER["contracts"] for key in ("layers", "source_modules") for m in c.get(key, [])}
    for module in named:
        assert module_exists(module), f"{module} is in a contract but not in the tree"


def test_the_contracts_hold() -> None:
    lint = Path(sysconfig.get_path("scripts")) / "lint-imports"
    assert lint.is_file(), "lint-imports is missing: pip install import-linter (make install)"
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "broken" in run.stdout and " 0 broken" in run.stdout, run.stdout[-2000:]


IMPORT_FIRST = """
import importlib, pkgutil, sys
import fixloop.core
names = sorted(m.name for m in pkgutil.walk_packages(fixloop.core.__path__, "fixloop.core."))
failed = []
for name in names:
    for loaded in [n for n in sys.modules if n == "fixloop" or n.startswith("fixloop.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as e:
        failed.append(f"{name}: {e}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_core_module_imports_first_without_a_cycle() -> None:
    """Each module of the pure core imported before any other (a fresh ``sys.modules`` of fixloop's names each time): an
    import cycle that only the usual order hides (fixloop.core.lifecycle -> change -> plan -> triage -> lifecycle)
    fails here instead of in a user's script or tool that imports that module first."""
    done = subprocess.run([sysconfig.get_path("scripts") + "/python", "-c", IMPORT_FIRST], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    count, _, failed = done.stdout.partition("\n")
    assert int(count) > 30 and failed.strip() == "", failed
