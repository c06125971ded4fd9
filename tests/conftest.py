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
