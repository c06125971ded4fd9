"""Shared fixtures. Tests marked `gpu` skip, with the reason, where no GPU is present."""

from __future__ import annotations

import pytest

from pose_edge.runtime.gpu import gpu_status


def pytest_collection_modifyitems(config, items):
    ok, why = gpu_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"needs a GPU: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small built-in data set (60 train, 20 val images at 320x240), generated once per test session."""
    from pose_edge.data import synth

    out = tmp_path_factory.mktemp("synth")
    synth.write_dataset(out, num_train=60, num_val=20, seed=0, size=(320, 240), progress=False)
    return out


@pytest.fixture(scope="session")
def small_models(tmp_path_factory):
    """Run folders of the three small presets with random weights (seed 0) and their FP32 ONNX exports:
    {"kapao-tiny": (run folder, onnx path), "sb-r18-128x96": ..., "det-tiny": ...}. About 25 s, once a session."""
    import dataclasses

    import torch

    from pose_edge.export.api import export_artifact
    from pose_edge.models import build_model, get_preset, model_meta
    from pose_edge.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("small_models")
    out = {}
    for name in ("kapao-tiny", "sb-r18-128x96", "det-tiny"):
        torch.manual_seed(0)
        preset = get_preset(name)
        run = root / name
        save_checkpoint(run / "best.pt", {"kind": "weights", "preset": dataclasses.asdict(preset),
                                          "meta": model_meta(preset).to_json(), "model": build_model(preset).state_dict(),
                                          "epoch": 0, "iteration": 0, "metrics": {}, "config": {}})
        out[name] = (run, export_artifact(run, precision="fp32", progress=False).onnx)
    return out
