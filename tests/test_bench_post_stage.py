"""benchmarks/bench_post_stage.py: the runtime's decode stage against another version of kapao_decode.py. Small
presets with random weights (conftest.small_models), the built-in synthetic data (conftest.synth_data). Nothing here
is about a time: the record's shape, and the agreement check that guards every figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_post_stage as bench  # noqa: E402


def test_records_both_decoders_on_kapao_and_the_detector(small_models, synth_data, tmp_path):
    models = [str(small_models[name][1]) for name in ("kapao-tiny", "det-tiny")]
    assert bench.main([*models, "--data", str(synth_data), "--frames", "3", "--rounds", "2",
                       "--out", str(tmp_path), "--name", "stage"]) == 0
    record = json.loads((tmp_path / "stage.json").read_text())
    assert record["reference"] == "kapao_decode_before.py" and record["rounds"] == 2
    assert [r["model"] for r in record["results"]] == [Path(m).name for m in models]
    for r in record["results"]:
        assert r["frames"] == 3 and len(r["poses_per_frame"]) == 3
        assert r["post_ms"]["today"] > 0 and r["post_ms"]["before"] > 0 and r["inference_ms"] > 0
        assert r["speedup"] == pytest.approx(r["post_ms"]["before"] / r["post_ms"]["today"], rel=0.01)
    assert "| kapao-tiny-fp32.onnx | 3 |" in (tmp_path / "stage.md").read_text()


def test_a_reference_that_finds_other_poses_stops_the_benchmark(small_models, synth_data, tmp_path):
    """A reference decoder that adds a pose to every image: no figure is recorded for decoders that disagree."""
    broken = tmp_path / "broken_decode.py"
    broken.write_text(
        "import numpy as np\n"
        "from pose_edge.runtime import kapao_decode\n"
        "from pose_edge.runtime.poses import Poses\n"
        "def postprocess(*args):\n"
        "    out = []\n"
        "    for p in kapao_decode.postprocess(*args):\n"
        "        k = p.keypoints.shape[1]\n"
        "        out.append(Poses(np.concatenate([p.keypoints, np.ones((1, k, 3), np.float32)]),\n"
        "                         np.concatenate([p.boxes, np.array([[0, 0, 9, 9]], np.float32)]),\n"
        "                         np.concatenate([p.scores, np.ones(1, np.float32)])))\n"
        "    return out\n")
    with pytest.raises(SystemExit, match="different numbers of poses"):
        bench.main([str(small_models["kapao-tiny"][1]), "--data", str(synth_data), "--frames", "2", "--rounds", "1",
                    "--reference", str(broken), "--out", str(tmp_path)])
    assert not (tmp_path / "post_stage.json").exists()
