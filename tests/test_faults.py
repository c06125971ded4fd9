"""Exports killed or stopped part-way: kill -9 inside a write, kill -9 or SIGTERM at a random moment of the engine
write. Whatever the moment, no file is ever partial under its final name, an engine and its sidecar never pass as a
pair unless they belong together, and the rerun ends clean (the dead process's temporaries removed).

Training is killed the same way in tests/test_train_engine.py (test_kill_9_at_a_random_point_then_resume_is_exact).
All of these spawn processes and build engines: marked slow (part of `make test`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pose_edge.errors import ArtifactError
from pose_edge.runtime.engine_sidecar import EngineSidecar, sidecar_path, verify_engine

sys.path.insert(0, str(Path(__file__).parent))
from script_runner import REPO, run_script  # noqa: E402
from tiny_models import kapao_onnx  # noqa: E402

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install 'pose-edge[trt]')")
KILL_IN_WRITE = Path(__file__).parent / "kill_in_write.py"
BUILD = ["export", "{onnx}", "--engine", "trt", "--sm", "8.6", "--batch", "1:2:4"]


def _args(onnx: Path) -> list[str]:
    return [a.format(onnx=onnx) for a in BUILD]


def _pair_state(engine: Path) -> str:
    """"consistent" (the sidecar describes this very engine), or the one-line reason loading refuses the pair."""
    try:
        sidecar = EngineSidecar.read(engine)
        verify_engine(sidecar, engine, engine.read_bytes())
    except ArtifactError as e:
        assert "\n" not in str(e)
        return str(e)
    return "consistent"


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture
def built(tmp_path):
    """A tiny ONNX and the engine + sidecar an earlier build made from it (the files a failed rebuild must not
    damage)."""
    from pose_edge.export.api import export_artifact

    onnx = kapao_onnx(tmp_path / "tiny.onnx")
    export_artifact(onnx, engine="trt", compute_capabilities=("8.6",), progress=False)
    engine = onnx.with_suffix(".engine")
    assert _pair_state(engine) == "consistent"
    return onnx, engine


def _rebuild_in_process(onnx: Path, engine: Path) -> None:
    from pose_edge.export.api import export_artifact

    export_artifact(onnx, engine="trt", compute_capabilities=("8.6",), batch="1:2:4", progress=False)
    assert _pair_state(engine) == "consistent" and _temporaries(engine.parent) == []
    assert EngineSidecar.read(engine).profile["max"][0] == 4  # the new build's


@pytest.mark.slow
def test_kill_9_between_the_engine_and_its_sidecar_is_refused_not_trusted(built):
    """Killed inside the sidecar's write: the new engine is in place, the old sidecar beside it. Loading refuses the
    pair (the sidecar records the old engine's hash) with the rebuild command; the rebuild ends clean."""
    onnx, engine = built
    old_engine = engine.read_bytes()
    killed = run_script(KILL_IN_WRITE, 2, "-m", "pose_edge.cli", *_args(onnx))
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert engine.read_bytes() != old_engine  # the first write (the engine) completed
    state = _pair_state(engine)
    assert "is not the engine its metadata file" in state and "pose-edge export" in state
    assert _temporaries(engine.parent)  # the sidecar's temporary, complete but never renamed
    _rebuild_in_process(onnx, engine)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopped_at_a_random_moment_of_the_engine_write(built, sig):
    """The signal lands a random few milliseconds after the engine's temporary appears (seeded): the pair under the
    final names is the old one, or the new engine with a sidecar that refuses it, or the new pair; never a partial
    engine. SIGTERM is turned into SystemExit by the CLI, so its temporaries are removed at once; after SIGKILL the
    rebuild removes them."""
    onnx, engine = built
    old = (engine.read_bytes(), sidecar_path(engine).read_bytes())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pose_edge.cli", *_args(onnx)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and not any(p.name.startswith(".tiny.engine.") for p in engine.parent.iterdir()):
        assert time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.0005)
    time.sleep(random.Random(sig).uniform(0, 0.02))
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    # Finished before the signal, or the SIGTERM came after the command, as the interpreter shut down (the CLI gives
    # the default handler back on its way out): a consistent pair.
    if proc.returncode == 0 or proc.returncode == -signal.SIGTERM:
        assert _pair_state(engine) == "consistent"
        assert _temporaries(engine.parent) == []  # a SIGTERM during the write would have left the engine's
    else:
        assert proc.returncode in (-9, 128 + signal.SIGTERM), err[-2000:]
        state = _pair_state(engine)
        now = (engine.read_bytes(), sidecar_path(engine).read_bytes())
        assert now == old or state == "consistent" or "is not the engine its metadata file" in state, state
        if sig == signal.SIGTERM:
            assert _temporaries(engine.parent) == [], _temporaries(engine.parent)
    _rebuild_in_process(onnx, engine)


@pytest.mark.slow
def test_export_from_a_run_folder_killed_in_its_onnx_write_leaves_the_run_intact(tmp_path):
    """Killed as the ONNX is renamed into place: no ONNX under its final name, the checkpoint untouched; the rerun
    writes it and removes the dead process's temporary."""
    import dataclasses
    import hashlib

    import torch

    from pose_edge.export.api import export_artifact
    from pose_edge.export.onnx_export import load_model
    from pose_edge.models import build_model, get_preset, model_meta
    from pose_edge.models.checkpoint import save_checkpoint

    run = tmp_path / "run"
    torch.manual_seed(0)
    preset = get_preset("kapao-tiny")
    save_checkpoint(run / "best.pt", {"kind": "weights", "preset": dataclasses.asdict(preset),
                                      "meta": model_meta(preset).to_json(), "model": build_model(preset).state_dict(),
                                      "epoch": 0, "iteration": 0, "metrics": {}, "config": {}})
    checkpoint = hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    out = run / "export" / "kapao-tiny-fp32.onnx"
    killed = run_script(KILL_IN_WRITE, 1, "-m", "pose_edge.cli", "export", run)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not out.exists() and _temporaries(out.parent)
    export_artifact(run, progress=False)
    load_model(out)
    assert _temporaries(out.parent) == []
    assert hashlib.sha256((run / "best.pt").read_bytes()).hexdigest() == checkpoint
