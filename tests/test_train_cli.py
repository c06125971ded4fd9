"""`pose-edge train` end to end in seconds, for each family: one epoch on the session's small data set writes a complete
run folder, and `pose-edge eval` of that run reports exactly the AP the training's own evaluation recorded (one
evaluation path). Whether the small presets learn is `make test-accuracy`'s job (test_*_training.py)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pose_edge.cli import main

RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "metrics.png", "meta.json", "args.json")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """16 training and 6 val images: one epoch is a couple of optimiser steps."""
    from pose_edge.data import synth

    out = tmp_path_factory.mktemp("tiny_synth")
    synth.write_dataset(out, num_train=16, num_val=6, seed=3, size=(320, 240), progress=False)
    return out


@pytest.mark.parametrize("preset", ["sb-r18-128x96", "kapao-tiny"])
def test_one_epoch_writes_a_run_that_eval_scores_identically(preset, tiny_data, tmp_path):
    synth_data = tiny_data
    runner = CliRunner()
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trained = runner.invoke(main, ["train", preset, "--data", str(synth_data), "--epochs", "1", "--workers", "0",
                                       "--device", "cpu", "--out", str(run), "--json"])
    finally:
        torch.set_num_threads(threads)
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output[trained.output.index("{"):])
    assert all((run / name).is_file() for name in RUN_FILES)
    scored = runner.invoke(main, ["eval", str(run), "--data", str(synth_data), "--json"])
    assert scored.exit_code == 0, scored.output
    stats = json.loads(scored.output[scored.output.index("{"):])
    assert stats["AP"] == pytest.approx(summary["best"], abs=1e-9)
    assert set(stats) >= {"AP", "AP50", "AR", "AR50"}
    again = runner.invoke(main, ["train", preset, "--data", str(synth_data), "--epochs", "1", "--out", str(run)])
    assert again.exit_code == 1 and "--resume" in again.output  # a run is never overwritten
