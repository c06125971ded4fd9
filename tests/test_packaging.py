"""The install layout: every sub-package is declared, export/ and kernels/ install under pose_edge."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def _packages_on_disk() -> set[str]:
    roots = {"pose_edge": ROOT / "pose_edge", "pose_edge.export": ROOT / "export", "pose_edge.kernels": ROOT / "kernels"}
    found = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_subpackage_is_declared():
    assert _packages_on_disk() == _declared_packages()


def test_export_and_kernels_import_as_subpackages():
    import pose_edge.export
    import pose_edge.kernels

    assert Path(pose_edge.export.__file__).parent == ROOT / "export"
    assert Path(pose_edge.kernels.__file__).parent == ROOT / "kernels"


def test_runtime_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, pose_edge.runtime as r\n"
        "for m in pkgutil.walk_packages(r.__path__, 'pose_edge.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]\n"
        "sys.exit(f'runtime imported {bad}' if bad else 0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
