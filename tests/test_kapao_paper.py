"""KAPAO's published inference settings as options (Settings.rect, scales above 1, scale_flips, clip) and the PAPER /
PAPER_TTA profiles.

A hand-written KAPAO backend (`MarkerKapao`) stands in for the network where the geometry is under test: it finds a
red square in each input it is given, whatever that input's size, and returns raw grids holding one pose object whose
keypoints all sit at the square's centre. Whatever a pass does to the image (rectangular letterbox, rescale, mirror),
the pose must come back at the square's centre in frame pixels. The real ONNX export of kapao-tiny (dynamic height
and width) then shows that the exported graph runs those inputs, and a fixed-size export is refused in one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import pose_edge
from pose_edge.cli import PROFILE_NAMES, main
from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import Letterbox, letterbox, rect_input_size
from pose_edge.keypoints import NUM_KEYPOINTS
from pose_edge.models import build_model, get_preset, model_meta
from pose_edge.runtime import kapao_decode
from pose_edge.runtime.settings import PAPER, PAPER_TTA, PROFILES, Thresholds
from pose_edge.runtime.single_stage import SingleStagePipeline, postprocess_clipped, tta_passes

META = model_meta(get_preset("kapao-tiny"))  # input 256x320, strides 8..64
LOOSE = Thresholds(conf_thres=0.5)


def _logit(p):
    return float(np.log(p / (1 - p)))


class MarkerKapao:
    """A Backend of kapao-tiny's meta: one pose object at the centroid of the pure-red pixels of each input (pixel
    i's centre at i + 0.5, the letterbox's pixel-corner coordinates), box one anchor in size, every keypoint there;
    every other cell below every threshold. dynamic_size: whether it takes inputs of other sizes."""

    def __init__(self, dynamic_size: bool = True):
        self.meta, self.dynamic_size, self.shapes = META, dynamic_size, []

    def run(self, images):
        n, h, w, _ = images.shape
        self.shapes.append((h, w))
        if not self.dynamic_size:
            assert (h, w) == (META.input.height, META.input.width)
        depth = 5 + META.num_classes + 2 * META.num_keypoints
        grids = [np.full((n, 3, depth, h // s, w // s), -12.0, np.float32) for s in META.strides]
        level, anchor, s = 1, 2, META.strides[1]
        aw, ah = META.anchors[level][anchor]
        for i, image in enumerate(images.astype(int)):
            red = (image[..., 2] > 200) & (image[..., 1] < 40) & (image[..., 0] < 40)
            ys, xs = np.nonzero(red)
            x, y = xs.mean() + 0.5, ys.mean() + 0.5
            gx, gy = int(x // s), int(y // s)
            cell = grids[level][i, anchor, :, gy, gx]
            cell[0], cell[1] = _logit((x / s - gx + 0.5) / 2), _logit((y / s - gy + 0.5) / 2)
            cell[2] = cell[3] = 0.0  # (2 * 0.5)^2 * anchor
            cell[4], cell[5], cell[6:5 + META.num_classes] = 6.0, 6.0, -10.0
            kp = cell[5 + META.num_classes:]
            kp[0::2], kp[1::2] = _logit(((x - gx * s) / aw + 2) / 4), _logit(((y - gy * s) / ah + 2) / 4)
        return [g.reshape(n, 3 * depth, *g.shape[3:]) for g in grids]


def frame_with_marker(h, w, center, half=6):
    frame = np.full((h, w, 3), 90, np.uint8)
    x, y = center
    frame[int(y) - half:int(y) + half, int(x) - half:int(x) + half] = (0, 0, 255)
    return frame, np.array([int(x), int(y)], np.float64)  # the square's centre in pixel-corner coordinates


def _one_pose_at(poses, where, tol=0.6):
    assert len(poses) == 1, len(poses)
    np.testing.assert_allclose(poses.keypoints[0, :, :2], np.tile(where, (NUM_KEYPOINTS, 1)), atol=tol)


# ---------------------------------------------------------------------------------------------------------- rect


def test_rect_input_size_pads_the_short_side_to_64():
    assert rect_input_size((427, 640), (1280, 1280)) == (896, 1280)  # ceil(1280 * 427/640 / 64) * 64
    assert rect_input_size((640, 427), (1280, 1280)) == (1280, 896)
    assert rect_input_size((480, 640), (1280, 1280)) == (960, 1280)  # exactly 15 * 64: no extra row of cells
    assert rect_input_size((500, 500), (1280, 1280)) == (1280, 1280)
    assert rect_input_size((100, 320), (256, 320)) == (128, 320)


def test_rect_letterbox_runs_each_shape_and_returns_frame_pixels():
    b = MarkerKapao()
    wide, at_wide = frame_with_marker(100, 320, (250.0, 40.0))
    tall, at_tall = frame_with_marker(300, 150, (70.0, 210.0))
    square, at_square = frame_with_marker(256, 320, (30.0, 200.0))
    pipeline = SingleStagePipeline(b, LOOSE, rect=True)
    poses = pipeline([wide, tall, wide, square])
    # One batch per canvas shape, in the order the shapes first appear; results in the frames' order.
    assert b.shapes == [(128, 320), rect_input_size((300, 150), (256, 320)), (256, 320)]
    for p, where in zip(poses, (at_wide, at_tall, at_wide, at_square)):
        _one_pose_at(p, where)


def test_rect_is_refused_on_a_fixed_size_backend():
    with pytest.raises(PoseEdgeError, match=r"rect.*fixed 256x320 input") as e:
        SingleStagePipeline(MarkerKapao(dynamic_size=False), rect=True)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------- test-time augmentation


def test_tta_passes_pair_scales_and_flips():
    assert tta_passes() == ((1.0, False),)
    assert tta_passes((1.0, 0.5), flip=True) == ((1.0, False), (1.0, True), (0.5, False))
    assert tta_passes(PAPER_TTA.scales, PAPER_TTA.flip, PAPER_TTA.scale_flips) == (
        (0.8, False), (1.0, True), (1.2, False))  # val.py --scales 0.8 1 1.2 --flips -1 3 -1: no plain pass at 1
    assert tta_passes(PAPER.scales, PAPER.flip, PAPER.scale_flips) == ((1.0, False),)
    with pytest.raises(PoseEdgeError, match="one flip per scale"):
        tta_passes((0.8, 1.0), scale_flips=(True,))
    with pytest.raises(PoseEdgeError, match="positive"):
        tta_passes((0.0,))


@pytest.mark.parametrize("scale,mirrored", [(1.2, False), (0.8, False), (1.2, True), (1.0, True), (0.83, False)])
def test_each_pass_returns_the_pose_in_frame_pixels(scale, mirrored):
    """On a backend that takes other sizes a scaled input is padded to the next multiple of 64 (1.2 at 256x320 runs
    at 320x384, 0.8 at 256x256); the pass's rows, descaled and de-flipped, put the pose back at the marker."""
    b = MarkerKapao()
    frame, where = frame_with_marker(240, 320, (201.0, 77.0))
    poses = SingleStagePipeline(b, LOOSE, scales=(scale,), scale_flips=(mirrored,))([frame])[0]
    new = (round(256 * scale), round(320 * scale))
    assert b.shapes == [(-(-new[0] // 64) * 64, -(-new[1] // 64) * 64)]
    _one_pose_at(poses, where, tol=0.6 / min(scale, 1))


def test_scales_below_one_pad_back_on_a_fixed_size_backend_and_above_one_are_refused():
    b = MarkerKapao(dynamic_size=False)
    frame, where = frame_with_marker(240, 320, (120.0, 140.0))
    poses = SingleStagePipeline(b, LOOSE, scales=(0.8,))([frame])[0]
    assert b.shapes == [(256, 320)]
    _one_pose_at(poses, where, tol=0.8)
    with pytest.raises(PoseEdgeError, match="TTA scales above 1 need a backend that takes larger inputs"):
        SingleStagePipeline(b, scales=(0.8, 1.0, 1.2))


def test_paper_tta_runs_three_passes_into_one_nms():
    b = MarkerKapao()
    frame, where = frame_with_marker(240, 320, (150.0, 100.0))
    settings = PAPER_TTA
    poses = SingleStagePipeline(b, LOOSE, scales=settings.scales, flip=settings.flip,
                                scale_flips=settings.scale_flips, clip=settings.clip)([frame])[0]
    assert b.shapes == [(256, 256), (256, 320), (320, 384)]
    # Each pass's box is one anchor of its own input, so the three boxes differ in size and NMS may keep more than
    # one; every pose kept is at the marker.
    assert 1 <= len(poses) <= 3
    np.testing.assert_allclose(poses.keypoints[..., :2], np.broadcast_to(where, (len(poses), NUM_KEYPOINTS, 2)),
                               atol=0.8)


# ------------------------------------------------------------------------------------------------------- clipping

NC, K = META.num_classes, META.num_keypoints
IMAGE = Letterbox(image_size=(100, 200), input_size=(100, 200), scale=(1.0, 1.0), pad=(0, 0))  # identity


def _row(cx, cy, w, h, cls, keypoints=None):
    row = np.zeros(5 + NC + 2 * K, np.float32)
    row[:5] = cx, cy, w, h, 0.9
    row[5 + cls] = 0.9
    if keypoints is not None:
        row[5 + NC:] = np.asarray(keypoints, np.float32).ravel()
    return row


def _person(offset=(0.0, 0.0)):
    kps = np.stack([np.linspace(40, 160, K), np.linspace(20, 80, K)], 1) + np.asarray(offset)
    return kps


def test_clipping_matches_postprocess_rows_inside_the_image():
    rows = np.stack([_row(100, 50, 150, 70, 0, _person()), _row(70, 40, 10, 10, 1 + 6, None)])
    plain = kapao_decode.postprocess_rows(rows, NC, K, IMAGE, LOOSE)
    clipped = postprocess_clipped(rows, NC, K, IMAGE, LOOSE)
    np.testing.assert_array_equal(clipped.keypoints, plain.keypoints)
    np.testing.assert_array_equal(clipped.boxes, plain.boxes)
    assert plain.keypoints[0, 6, 2] > 0  # the keypoint object was fused


def test_clipping_reproduces_the_originals_quirks():
    """Person boxes and keypoint-object boxes clipped to the image; of the keypoints only the first two (nose, left
    eye), as val.py's clip_coords on the pose array's first four numbers; a clipped keypoint object's centre moves."""
    kps = _person()
    kps[0] = (-15.0, 50.0)  # nose left of the image
    kps[1] = (30.0, 120.0)  # left eye below it
    kps[9] = (-20.0, 60.0)  # left wrist left of it: not clipped
    kps[5] = (4.0, 30.0)  # left shoulder, near the edge, where a keypoint object crosses it
    rows = np.stack([_row(60, 50, 150, 70, 0, kps), _row(3.0, 31.0, 20, 10, 1 + 5, None)])
    plain = kapao_decode.postprocess_rows(rows, NC, K, IMAGE, LOOSE)
    clipped = postprocess_clipped(rows, NC, K, IMAGE, LOOSE)
    np.testing.assert_allclose(plain.boxes[0], [-15, 15, 135, 85])
    np.testing.assert_allclose(clipped.boxes[0], [0, 15, 135, 85])
    np.testing.assert_allclose(clipped.keypoints[0, 0, :2], [0, 50])
    np.testing.assert_allclose(clipped.keypoints[0, 1, :2], [30, 100])
    np.testing.assert_allclose(clipped.keypoints[0, 9, :2], [-20, 60])
    np.testing.assert_allclose(plain.keypoints[0, 5, :2], [3, 31])  # the keypoint object's centre
    np.testing.assert_allclose(clipped.keypoints[0, 5, :2], [6.5, 31])  # the centre of [0, 13] x [26, 36]
    assert clipped.keypoints[0, 5, 2] == pytest.approx(0.81)


def test_clip_and_rect_in_the_pipeline():
    b = MarkerKapao()
    frame, where = frame_with_marker(120, 320, (300.0, 60.0))
    poses = SingleStagePipeline(b, LOOSE, rect=True, clip=True)([frame])[0]
    _one_pose_at(poses, where)
    assert (poses.boxes[0, 2] <= 320) and (poses.boxes[0, 0] >= 0)


# ------------------------------------------------------------------------------------------- the real ONNX export


def test_profiles_are_the_clis():
    assert set(PROFILE_NAMES) == set(PROFILES)


def test_rect_and_scales_above_one_run_on_the_dynamic_onnx(small_models):
    """kapao-tiny's ONNX export has a dynamic height and width: the rectangular canvas and the 1.2 pass run, and the
    rect poses are exactly the decoding of the network's output on that canvas."""
    onnx_path = small_models["kapao-tiny"][1]
    est = pose_edge.load(onnx_path, device="cpu", settings="paper")
    assert est.pipeline.rect and est.pipeline.clip and est.pipeline.other_sizes
    seen = []
    run = est.pipeline.backend.run

    def recording(images):
        seen.append(images.shape[1:3])
        return run(images)

    est.pipeline.backend.run = recording
    frame = np.random.default_rng(0).integers(0, 256, (100, 320, 3), dtype=np.uint8)
    poses = est(frame)
    assert seen == [(128, 320)]
    canvas, box = letterbox(frame, (128, 320))
    expected = postprocess_clipped(kapao_decode.decode(run(canvas[None]), META.strides, META.anchors, NC, K)[0], NC, K,
                                   box, PAPER.single_stage)
    keep = expected.scores >= est.settings.min_score
    np.testing.assert_array_equal(poses.keypoints, expected.keypoints[keep])

    seen.clear()
    tta = pose_edge.load(onnx_path, device="cpu", settings="paper-tta")
    tta.pipeline.backend.run = recording
    poses = tta(frame)
    assert seen == [(256, 256), (256, 320), (320, 384)] and np.isfinite(poses.keypoints).all()


def test_a_fixed_size_onnx_is_refused_in_one_line(tmp_path, synth_data):
    from pose_edge.export.onnx_export import export_onnx

    torch.manual_seed(0)
    path = tmp_path / "fixed.onnx"
    export_onnx(build_model(get_preset("kapao-tiny")), META, path, dynamic_size=False)
    for profile in ("paper", "paper-tta"):
        with pytest.raises(PoseEdgeError, match="fixed 256x320 input") as e:
            pose_edge.load(path, device="cpu", settings=profile)
        assert "\n" not in str(e.value)
    result = CliRunner().invoke(main, ["eval", str(path), "--data", str(synth_data), "--settings", "paper"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "fixed 256x320 input" in result.output
    result = CliRunner().invoke(main, ["eval", str(path), "--data", str(synth_data), "--settings", "paper",
                                       "--no-rect", "--json"])
    assert result.exit_code == 0, result.output  # the rest of the paper's settings run at the fixed size
    assert "AP" in json.loads(result.output)
