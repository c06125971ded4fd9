"""The small Simple Baseline preset, trained for about two minutes on the built-in synthetic set through the CLI,
from scratch, reaches a COCO keypoint AP (pycocotools, on val images it never trained on, ground-truth boxes) far
above an untrained model's."""

from __future__ import annotations

import json
import time

import pytest
import torch
from click.testing import CliRunner

from pose_edge.cli import main

PRESET = "sb-r18-128x96"
EPOCHS = 4
# A quarter of the measured val AP 0.044 / AP50 0.188 on these images (untrained 0.000 / 0.000; RECIPES.md).
MIN_AP = 0.01
MIN_AP50 = 0.04


@pytest.fixture(scope="module")
def sb_data(tmp_path_factory):
    from pose_edge.data import synth

    out = tmp_path_factory.mktemp("sb-synth")
    synth.write_dataset(out, num_train=400, num_val=60, seed=1, size=(320, 240), progress=False)
    return out


def evaluate_untrained(data_dir) -> dict:
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.evaluate.split import evaluate_split
    from pose_edge.models import build_model, get_preset, model_meta
    from pose_edge.models.torch_backend import TorchBackend

    torch.manual_seed(0)
    preset = get_preset(PRESET)
    return evaluate_split(TorchBackend(build_model(preset), model_meta(preset)), CocoKeypoints(data_dir, "val"))


@pytest.mark.accuracy
def test_small_preset_learns_on_synthetic_data(sb_data, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is faster than two, and repeatable
    try:
        started = time.perf_counter()
        result = runner.invoke(main, ["train", PRESET, "--data", str(sb_data), "--epochs", str(EPOCHS), "--workers",
                                      "0", "--device", "cpu", "--out", str(run), "--eval-every", str(EPOCHS), "--json"])
        train_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    for name in ("last.pt", "best.pt", "metrics.csv", "metrics.png", "meta.json", "args.json"):
        assert (run / name).is_file(), name

    result = runner.invoke(main, ["eval", str(run), "--data", str(sb_data), "--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output[result.output.index("{"):])
    untrained = evaluate_untrained(sb_data)
    print(f"\n{PRESET}: {EPOCHS} epochs in {train_s:.0f} s; val AP {trained['AP']:.3f} (untrained "
          f"{untrained['AP']:.3f}); AP50 {trained['AP50']:.3f}")
    assert trained["AP"] == pytest.approx(summary["best"], abs=1e-6)  # eval of the run = the engine's evaluation
    assert untrained["AP"] < 0.001
    assert trained["AP"] > untrained["AP"] + MIN_AP
    assert trained["AP50"] > untrained["AP50"] + MIN_AP50
