"""Layers point down: no module imports one from a higher layer, at module level or inside a function.

Bottom to top (DESIGN.md, the import graph as it stands):
    0 definitions and utilities   keypoints, errors, fsutil, progress, model_meta, geometry, heatmap_codec
    1 data                        COCO loading, the built-in set, training samples
    2 models                      networks, presets, checkpoints, the PyTorch backend
    3 runtime                     torch-free: backends, pipelines, NumPy decoders, Poses, sources, drawing, tracking
    4 kernels                     CUDA decode kernels, their loader and CPU emulation (import the runtime's types)
    5 entry point                 artifacts (opens any artefact), estimator (pose_edge.load), predict
    6 evaluate                    pycocotools scoring and the one evaluation path
    7 train, export, bench        bench scores through evaluate and times through the entry point
    8 cli
The package's own __init__ is the public facade: it imports its API lazily from above and is exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"pose_edge": ROOT / "pose_edge", "pose_edge.export": ROOT / "export",
                "pose_edge.kernels": ROOT / "kernels"}

LAYERS = [
    ("pose_edge.keypoints", "pose_edge.errors", "pose_edge.fsutil", "pose_edge.progress", "pose_edge.model_meta",
     "pose_edge.geometry", "pose_edge.heatmap_codec"),
    ("pose_edge.data",),
    ("pose_edge.models",),
    ("pose_edge.runtime",),
    ("pose_edge.kernels",),
    ("pose_edge.artifacts", "pose_edge.estimator", "pose_edge.predict"),
    ("pose_edge.evaluate",),
    ("pose_edge.train", "pose_edge.export", "pose_edge.bench"),
    ("pose_edge.cli",),
]


def layer_of(module: str) -> int | None:
    best, found = -1, None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), rank
    return found


def modules() -> dict[str, Path]:
    out = {}
    for package, root in PACKAGE_DIRS.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every pose_edge module `path` imports, anywhere in the file (absolute and relative imports)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pose_edge import evaluate` imports a module
    return {m for m in found if m.startswith("pose_edge")}


def violations() -> list[str]:
    known = modules()
    bad = []
    for name, path in sorted(known.items()):
        if name == "pose_edge":
            continue
        own = layer_of(name)
        assert own is not None, f"{name} belongs to no layer: add it to LAYERS"
        resolved = {m if m in known else m.rpartition(".")[0] for m in imports_of(name, path)}  # `from m import f`
        for imported in sorted(resolved):
            if imported not in known or imported == "pose_edge":
                continue
            if layer_of(imported) > own:
                bad.append(f"{name} (layer {own}) imports {imported} (layer {layer_of(imported)})")
    return bad


def test_every_module_has_a_layer_and_imports_only_downwards():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself can fail: a runtime module importing the evaluation layer is reported."""
    fake = tmp_path / "pose_edge" / "runtime"
    fake.mkdir(parents=True)
    (fake / "leak.py").write_text("def f():\n    from pose_edge.evaluate.split import evaluate_split\n")
    (tmp_path / "pose_edge" / "evaluate").mkdir()
    (tmp_path / "pose_edge" / "evaluate" / "split.py").write_text("")
    monkeypatch.setitem(PACKAGE_DIRS, "pose_edge", tmp_path / "pose_edge")
    monkeypatch.setitem(PACKAGE_DIRS, "pose_edge.export", tmp_path / "none")
    monkeypatch.setitem(PACKAGE_DIRS, "pose_edge.kernels", tmp_path / "none")
    assert violations() == ["pose_edge.runtime.leak (layer 3) imports pose_edge.evaluate.split (layer 6)"]
