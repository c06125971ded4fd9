"""benchmarks/bench_frame_ab.py: `pose-edge bench` from this tree and from a reference tree, alternating, and the
record it writes. The reference here is this tree itself (the script's plumbing is under test, not a speed-up), and
nothing asserts a time: only that both trees' figures are there, taken from real bench runs, and consistent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_frame_ab as bench  # noqa: E402


@pytest.mark.slow
def test_records_both_trees_from_real_bench_runs(small_models, synth_data, tmp_path):
    model = str(small_models["kapao-tiny"][1])
    out = tmp_path / "out"
    assert bench.main([model, "--data", str(synth_data), "--reference", str(ROOT), "--rounds", "2", "--people", "1",
                       "--warmup", "1", "--iters", "3", "--out", str(out), "--name", "ab"]) == 0
    record = json.loads((out / "ab.json").read_text())
    assert set(record["results"]) == {"this", "reference"} and record["rounds"] == 2
    for tree in ("this", "reference"):
        assert len(record["rounds_raw"][tree]) == 2
        (label, figures), = record["results"][tree].items()
        assert label.startswith("kapao-tiny fp32")
        assert figures["model_ms"] > 0 and figures["pre_ms"] > 0 and figures["post_ms"] > 0
        assert set(figures["people"]) == {"1"}
        ratios = [r[label]["pre_plus_post_over_model"] for r in record["rounds_raw"][tree]]
        assert figures["pre_plus_post_over_model"] == pytest.approx(sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2,
                                                                    abs=1e-4)  # the median of two rounds
    if Path("/proc/stat").exists():
        assert 0.0 <= record["steal_share"] <= 1.0
    table = (out / "ab.md").read_text()
    assert table.count("| kapao-tiny fp32") == 2 and "| 1 people |" in table


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not a checkout of this repository"):
        bench.main(["model.onnx", "--data", str(tmp_path), "--reference", str(tmp_path), "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_steal_share_from_two_readings():
    before = [100, 0, 50, 800, 10, 0, 0, 40, 0, 0]
    after = [200, 0, 100, 1600, 10, 0, 0, 140, 0, 0]  # 100 + 50 + 800 + 100 = 1050 spent, 100 of it stolen
    assert bench.steal_share(before, after) == pytest.approx(100 / 1050, abs=1e-3)
    assert bench.steal_share(None, after) is None
