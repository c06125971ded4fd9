"""benchmarks/bench_quarter_floor.py: one crop's quarter decode, C and NumPy finish, against the original.

The original Simple Baselines cannot be downloaded here, so each test writes a stand-in checkout with the two files
the script compiles functions from: one whose get_final_preds agrees with ours (the record's shape and ratios), one
that is a pixel off (the agreement check that guards every figure). Nothing here is about a time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_quarter_floor as bench  # noqa: E402

from pose_edge.runtime import heatmap_decode  # noqa: E402

# Stand-ins for the original's functions: the crop's affine as the benchmark passes it, and get_final_preds by our
# own decoder (shifted by `OFFSET` px), so only the script's plumbing and checks are under test.
TRANSFORMS = '''
def get_affine_transform(center, scale, rot, output_size, inv=0):
    s = scale * 200.0 / np.array(output_size, np.float64)
    return np.array([[s[0], 0.0, center[0] - s[0] * output_size[0] / 2],
                     [0.0, s[1], center[1] - s[1] * output_size[1] / 2]])
def transform_preds(): pass
def affine_transform(): pass
def get_3rd_point(): pass
def get_dir(): pass
'''
INFERENCE = '''
def get_final_preds(config, batch_heatmaps, center, scale):
    from pose_edge.runtime.heatmap_decode import decode_heatmaps
    h, w = batch_heatmaps.shape[2:]
    affine = np.stack([get_affine_transform(center[i], scale[i], 0, [w, h], inv=1) for i in range(len(center))])
    out = decode_heatmaps(batch_heatmaps, affine, "quarter")
    return out[..., :2] + OFFSET, out[..., 2:]
def get_max_preds(): pass
'''


def stand_in(folder: Path, offset: float) -> Path:
    (folder / "lib/utils").mkdir(parents=True)
    (folder / "lib/core").mkdir(parents=True)
    (folder / "lib/utils/transforms.py").write_text(TRANSFORMS)
    (folder / "lib/core/inference.py").write_text(INFERENCE.replace("OFFSET", repr(offset)))
    return folder


def test_records_every_row_with_its_ratio_to_the_original(tmp_path):
    original = stand_in(tmp_path / "sb", 0.0)
    assert bench.main(["--simplebaselines", str(original), "--rounds", "2", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out/quarter_floor.json").read_text())
    result = record["result"]
    assert list(result["median_us"]) == ["original", "quarter", "quarter-numpy", "none-numpy",
                                        "none-no-map-numpy", "argmax"]
    assert result["c_finish"] is heatmap_decode.NATIVE_FINISH  # what the `quarter` row ran, and left as it was
    for name, us in result["median_us"].items():
        assert us > 0 and len(result["rounds_us"][name]) == 2
        assert result["ratio_original_over"][name] == pytest.approx(result["median_us"]["original"] / us)
    assert result["max_diff_image_px"] == 0.0
    assert "| none-no-map-numpy |" in (tmp_path / "out/quarter_floor.md").read_text()


def test_an_original_that_disagrees_stops_before_any_time(tmp_path):
    original = stand_in(tmp_path / "sb", 1.0)
    with pytest.raises(SystemExit, match="differ by 1.0 px"):
        bench.main(["--simplebaselines", str(original), "--rounds", "2", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
