"""The NumPy KAPAO decode, NMS and fusion: the reference the CUDA kernels are tested against."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pose_edge.geometry import Letterbox, fit, letterbox
from pose_edge.runtime import kapao_decode as kd
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import DEPLOY

sys.path.insert(0, str(Path(__file__).parent))
import kapao_decode_before as before  # noqa: E402  (today's decoder, the reference for the fast path)

STRIDES = (8, 16, 32, 64)
ANCHORS = (((19, 27), (44, 40), (38, 94)), ((96, 68), (86, 152), (180, 137)),
           ((140, 301), (303, 264), (238, 542)), ((436, 615), (739, 380), (925, 792)))
NC, K = 18, 17
D = 5 + NC + 2 * K


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p)).astype(np.float32)


def empty_grids(n=1, size=(256, 320), fill=-30.0):
    return [np.full((n, 3 * D, size[0] // s, size[1] // s), fill, np.float32) for s in STRIDES]


def place(grids, level, anchor, gx, gy, cx, cy, w, h, obj, cls, keypoints, image=0):
    """Write the raw values that decode to the given object into one anchor of one cell."""
    s = STRIDES[level]
    aw, ah = ANCHORS[level][anchor]
    raw = np.full(D, -30.0, np.float32)
    raw[0:2] = logit(((cx / s - gx) + 0.5) / 2, ), logit(((cy / s - gy) + 0.5) / 2)
    raw[2:4] = logit(np.sqrt(w / aw) / 2), logit(np.sqrt(h / ah) / 2)
    raw[4] = logit(obj)
    raw[5 + cls] = logit(0.99)
    kp = np.asarray(keypoints, np.float64).reshape(K, 2)
    raw[5 + NC::2] = logit(((kp[:, 0] - gx * s) / aw + 2) / 4)
    raw[6 + NC::2] = logit(((kp[:, 1] - gy * s) / ah + 2) / 4)
    grids[level][image, anchor * D:(anchor + 1) * D, gy, gx] = raw
    return raw


def test_decode_recovers_what_was_placed_and_row_order():
    rng = np.random.default_rng(0)
    grids = empty_grids()
    placed = []
    for level, anchor, gx, gy in [(0, 1, 5, 7), (1, 2, 3, 2), (2, 0, 4, 3), (3, 1, 1, 0)]:
        s = STRIDES[level]
        aw, ah = ANCHORS[level][anchor]
        cx, cy = (gx + rng.uniform(-0.4, 1.4)) * s, (gy + rng.uniform(-0.4, 1.4)) * s
        w, h = aw * rng.uniform(0.3, 3.5), ah * rng.uniform(0.3, 3.5)
        kps = np.stack([gx * s + rng.uniform(-1.9, 1.9, K) * aw, gy * s + rng.uniform(-1.9, 1.9, K) * ah], -1)
        place(grids, level, anchor, gx, gy, cx, cy, w, h, 0.9, 0, kps)
        placed.append((level, anchor, gx, gy, cx, cy, w, h, kps))
    rows = kd.decode(grids, STRIDES, ANCHORS, NC, K)
    sizes = [3 * g.shape[2] * g.shape[3] for g in grids]
    assert rows.shape == (1, sum(sizes), D) and rows.dtype == np.float32
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for level, anchor, gx, gy, cx, cy, w, h, kps in placed:
        height, width = grids[level].shape[2:]
        r = offsets[level] + (anchor * height + gy) * width + gx
        np.testing.assert_allclose(rows[0, r, :4], [cx, cy, w, h], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(rows[0, r, 4], 0.9, atol=1e-6)
        np.testing.assert_allclose(rows[0, r, 5], 0.99, atol=1e-6)
        np.testing.assert_allclose(rows[0, r, 5 + NC:].reshape(K, 2), kps, rtol=1e-4, atol=2e-2)
    assert (rows[0, :, 4] > 0.5).sum() == len(placed)


def test_postprocess_finds_placed_poses_fuses_keypoints_and_undoes_letterbox():
    grids = empty_grids()
    kps = np.stack([np.linspace(100, 160, K), np.linspace(60, 200, K)], -1)
    place(grids, 1, 1, 8, 8, 130.0, 130.0, 80.0, 160.0, 0.95, 0, kps)
    # a second, weaker pose far away that is eligible (score > 0.3)
    kps2 = kps + [120.0, 0.0]
    place(grids, 1, 1, 15, 8, 250.0, 130.0, 80.0, 160.0, 0.6, 0, kps2)
    # keypoint object for the left wrist (k=9), 7 px from pose 1's regressed wrist
    wrist = kps[9] + [5.0, 5.0]
    cell = (wrist // 8).astype(int)
    place(grids, 0, 0, *cell, *wrist, 20.0, 20.0, 0.9, 1 + 9, np.tile(cell * 8.0, (K, 1)))
    box = Letterbox(image_size=(128, 160), input_size=(256, 320), scale=(2.0, 2.0), pad=(0, 0))
    (result,) = kd.postprocess(grids, STRIDES, ANCHORS, NC, K, [box])
    assert len(result) == 2
    np.testing.assert_allclose(result.scores, [0.95 * 0.99, 0.6 * 0.99], rtol=1e-5)
    np.testing.assert_allclose(result.boxes[0], np.array([90, 50, 170, 210]) / 2, atol=1e-2)
    expected = kps / 2
    expected[9] = wrist / 2
    np.testing.assert_allclose(result.keypoints[0, :, :2], expected, atol=2e-2)
    conf = np.zeros(K)
    conf[9] = 0.9 * 0.99
    np.testing.assert_allclose(result.keypoints[0, :, 2], conf, atol=1e-5)
    np.testing.assert_allclose(result.keypoints[1, :, :2], kps2 / 2, atol=2e-2)
    assert (result.keypoints[1, :, 2] == 0).all()


def test_candidates_take_the_best_class_before_the_class_filter():
    rows = np.zeros((3, D), np.float32)
    rows[:, 4] = 0.9
    rows[0, 5], rows[0, 6] = 0.8, 0.7  # person best
    rows[1, 5], rows[1, 6] = 0.7, 0.8  # keypoint best: never a person candidate
    rows[2, 5] = 0.0005  # below conf after obj*cls
    index, conf, cls = kd.select_candidates(rows, NC, 0.001, classes=[0])
    assert index.tolist() == [0] and cls.tolist() == [0]
    np.testing.assert_allclose(conf, [0.72], rtol=1e-6)


# ------------------------------------------------------------------ NMS against torchvision


def torchvision_keep(boxes, scores, classes, thr):
    return torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                       torch.from_numpy(classes), thr).numpy()


def random_boxes(rng, n, quantum=None, scale=600.0):
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(2, scale / 4, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    if quantum:
        boxes = np.round(boxes / quantum) * quantum
    return boxes.astype(np.float32)


@pytest.mark.parametrize("n", [1, 7, 64, 300, 999, 1500])  # 64: the all-pairs path
@pytest.mark.parametrize("thr", [0.25, 0.45, 0.65])
def test_nms_keeps_exactly_what_torchvision_keeps(n, thr):
    rng = np.random.default_rng(n * 100 + int(thr * 100))
    boxes = random_boxes(rng, n)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    classes = rng.integers(0, 3, n)
    ours = kd.nms(boxes, scores, classes, thr)
    np.testing.assert_array_equal(ours, torchvision_keep(boxes, scores, classes, thr))
    assert len(ours) < n or n < 100  # the larger cases actually suppress something


@pytest.mark.parametrize("n", [50, 400, 1200])  # 1200: torchvision's per-class path on CPU (> 1000 boxes)
def test_nms_ties_identical_boxes_and_degenerate_boxes(n):
    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n, quantum=1 / 8, scale=200.0)
    boxes[n // 2:n // 2 + 20] = boxes[n // 2]  # identical boxes
    boxes[5:9] = [10, 10, 10, 30]  # identical zero-area boxes: IoU NaN, none suppresses another
    scores = np.round(rng.uniform(0, 1, n) * 8).astype(np.float32) / 8  # many equal scores
    classes = rng.integers(0, 18, n)
    classes[n // 2:n // 2 + 10] = 3
    ours = kd.nms(boxes, scores, classes, 0.5)
    theirs = torchvision_keep(boxes, scores, classes, 0.5)
    if n <= 1000:
        np.testing.assert_array_equal(ours, theirs)
    else:
        # torchvision's per-class path orders its result with an unstable sort: equal scores come in any order.
        np.testing.assert_array_equal(np.sort(ours), np.sort(theirs))
        np.testing.assert_array_equal(scores[ours], scores[theirs])
    # equal scores are visited in increasing index: among kept boxes of one score, indices ascend
    kept_scores = scores[ours]
    for value in np.unique(kept_scores):
        same = ours[kept_scores == value]
        assert (np.diff(same) > 0).all()


def test_nms_iou_exactly_at_threshold_is_kept():
    boxes = np.array([[0, 0, 4, 1], [2, 0, 6, 1], [0, 0, 4, 1]], np.float32)  # IoU(0, 1) = 2 / 6
    scores = np.array([0.9, 0.8, 0.5], np.float32)
    classes = np.zeros(3, np.int64)
    for thr in (1 / 3, 0.3, 0.34):
        np.testing.assert_array_equal(kd.nms(boxes, scores, classes, thr),
                                      torchvision_keep(boxes, scores, classes, thr))
    assert kd.nms(boxes, scores, classes, 0.3).tolist() == [0]
    assert kd.nms(boxes, scores, classes, 0.34).tolist() == [0, 1]


def test_nms_empty_input_and_max_keep():
    empty = kd.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
    assert empty.dtype == np.int64 and empty.shape == (0,)
    assert torchvision_keep(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                            0.5).shape == (0,)
    rng = np.random.default_rng(3)
    boxes, scores, classes = random_boxes(rng, 500), rng.uniform(0, 1, 500).astype(np.float32), np.zeros(500, int)
    full = kd.nms(boxes, scores, classes, 0.5)
    np.testing.assert_array_equal(kd.nms(boxes, scores, classes, 0.5, max_keep=10), full[:10])


# ------------------------------------------------------------------ fusion


def two_poses():
    pose_xy = np.zeros((2, K, 2), np.float32)
    pose_xy[0] = np.stack([np.arange(K) * 10.0, np.full(K, 100.0)], -1)
    pose_xy[1] = np.stack([np.arange(K) * 10.0, np.full(K, 300.0)], -1)
    return pose_xy


def test_fusion_moves_only_what_it_should():
    pose_xy = two_poses()
    scores = np.array([0.9, 0.8])
    dets = [
        # (x, y, conf, type)
        (50.0, 130.0, 0.8, 5),  # 30 px from pose 0 kp 5: moves it
        (60.0, 160.0, 0.7, 6),  # 60 px from pose 0 kp 6 (> tol 50): no move
        (72.0, 110.0, 0.5, 7),  # moves pose 0 kp 7 ...
        (73.0, 101.0, 0.4, 7),  # ... and this one, less confident, nearest to the moved kp 7: no move
        (80.0, 320.0, 0.6, 8),  # nearest is pose 1 kp 8: moves pose 1 only
        (0.0, 100.0, 0.3, 9),  # 90 px from pose 0's kp 9 (90, 100); other type's kp 0 is right here: no move
    ]
    fused = kd.fuse_keypoints(pose_xy, scores, [d[:2] for d in dets], [d[2] for d in dets], [d[3] for d in dets])
    expected = np.concatenate([pose_xy, np.zeros((2, K, 1), np.float32)], -1)
    expected[0, 5] = (50, 130, 0.8)
    expected[0, 7] = (72, 110, 0.5)
    expected[1, 8] = (80, 320, 0.6)
    np.testing.assert_allclose(fused, expected, rtol=1e-6)


def test_fusion_two_poses_competing_and_eligibility():
    pose_xy = two_poses()
    pose_xy[1, 3] = (35.0, 120.0)  # pose 1's kp 3 is near pose 0's kp 3 (30, 100)
    # the detection at (33, 112) is 12.4 px from pose 0 and 8.5 px from pose 1: pose 1 gets it
    fused = kd.fuse_keypoints(pose_xy, [0.9, 0.8], [[33.0, 112.0], [31.0, 101.0]], [0.7, 0.6], [3, 3])
    np.testing.assert_allclose(fused[1, 3], (33, 112, 0.7), rtol=1e-6)
    # the second detection's nearest pose is pose 0 (1.4 px): it moves pose 0's kp 3
    np.testing.assert_allclose(fused[0, 3], (31, 101, 0.6), rtol=1e-6)
    # pose 1 not eligible (score 0.2 <= 0.3): the first detection goes to pose 0, the second loses to it
    fused = kd.fuse_keypoints(pose_xy, [0.9, 0.2], [[33.0, 112.0], [31.0, 101.0]], [0.7, 0.6], [3, 3])
    np.testing.assert_allclose(fused[0, 3], (33, 112, 0.7), rtol=1e-6)
    np.testing.assert_allclose(fused[1, 3], (35, 120, 0.0), rtol=1e-6)
    # a detection exactly at the tolerance does not move anything (distance < tol is strict)
    fused = kd.fuse_keypoints(pose_xy, [0.9, 0.8], [[0.0, 50.0]], [0.9], [0], overwrite_tol=50.0)
    assert fused[0, 0, 2] == 0


def fuse_loop(pose_xy, scores, kp_xy, kp_conf, kp_type, conf_person=0.3, tol=50.0):
    """The reference's loop (val.py post_process_batch), written plainly, to compare the vectorised scan with."""
    poses = np.concatenate([pose_xy, np.zeros((len(pose_xy), K, 1), np.float32)], -1)
    eligible = np.flatnonzero(np.asarray(scores) > conf_person)
    for (x, y), conf, k in zip(kp_xy, kp_conf, kp_type):
        if not len(eligible):
            break
        current = poses[eligible, k]
        dist2 = (current[:, 0] - np.float32(x)) ** 2 + (current[:, 1] - np.float32(y)) ** 2
        p = np.argmin(dist2)
        if conf > current[p, 2] and dist2[p] < tol * tol:
            poses[eligible[p], k] = (x, y, conf)
    return poses


def test_fusion_scan_equals_the_sequential_loop_on_random_scenes():
    rng = np.random.default_rng(7)
    moved = 0
    for trial in range(30):
        p, q = rng.integers(1, 8), rng.integers(0, 120)
        pose_xy = rng.uniform(0, 300, (p, K, 2)).astype(np.float32)
        scores = rng.uniform(0, 1, p)
        kp_xy = rng.uniform(0, 300, (q, 2)).astype(np.float32)
        kp_conf = np.sort(np.round(rng.uniform(0.2, 1, q) * 10) / 10)[::-1].astype(np.float32)
        kp_type = rng.integers(0, K, q)
        fused = kd.fuse_keypoints(pose_xy, scores, kp_xy, kp_conf, kp_type)
        np.testing.assert_array_equal(fused, fuse_loop(pose_xy, scores, kp_xy, kp_conf, kp_type))
        moved += int((fused[..., 2] > 0).sum())
    assert moved > 50  # the scenes do exercise fusion


def test_detector_rows_without_keypoints():
    d = 6
    grids = [np.full((2, 3 * d, 32 // s, 32 // s), -30.0, np.float32) for s in (8, 16)]
    grids[0][1, 0:6, 1, 2] = [0.0, 0.0, 0.0, 0.0, 5.0, 5.0]
    out = kd.postprocess(grids, (8, 16), (((10, 10),) * 3,) * 2, 1, 0)
    assert len(out[0]) == 0 and len(out[1]) == 1
    np.testing.assert_allclose(out[1].boxes[0], [20 - 5, 12 - 5, 20 + 5, 12 + 5], atol=1e-4)
    assert out[1].keypoints.shape == (1, 0, 3)


def test_decode_rejects_wrong_channel_counts():
    grids = empty_grids()
    grids[2] = grids[2][:, :-1]
    with pytest.raises(ValueError, match="channels"):
        kd.decode(grids, STRIDES, ANCHORS, NC, K)


# ------------------------------------------------------------------ letterbox


@pytest.mark.parametrize("image_size", [(480, 640), (640, 480), (100, 1000), (1280, 1280), (37, 53)])
def test_letterbox_maps_points_and_back(image_size):
    image = np.random.default_rng(0).integers(0, 255, (*image_size, 3), dtype=np.uint8)
    canvas, box = letterbox(image, (256, 320))
    assert canvas.shape == (256, 320, 3) and canvas.dtype == np.uint8
    pts = np.array([[0, 0], [image_size[1], image_size[0]], [10.5, 7.25]], np.float32)
    inp = box.to_input(pts)
    # the image's corners land on the resized area's corners, which lies inside the canvas, centred
    assert inp[0].tolist() == list(box.pad)
    assert 0 <= inp[1, 0] <= 320 and 0 <= inp[1, 1] <= 256
    assert min(inp[1, 0] - inp[0, 0], inp[1, 1] - inp[0, 1]) >= 0
    assert (320 - inp[1, 0]) in (box.pad[0], box.pad[0] + 1) and (256 - inp[1, 1]) in (box.pad[1], box.pad[1] + 1)
    np.testing.assert_allclose(box.to_image(inp), pts, atol=1e-3)
    assert fit(image_size, (256, 320)) == box


# ------------------------------------------------------------------ test-time flip


def test_deflip_rows_mirrors_boxes_and_swaps_left_and_right():
    from pose_edge.keypoints import FLIP_PERM
    from pose_edge.runtime.single_stage import deflip_rows

    rng = np.random.default_rng(5)
    rows = rng.uniform(0, 1, (7, D)).astype(np.float32)
    rows[:, 0:4] *= 300
    rows[:, 5 + NC:] *= 300
    back = deflip_rows(rows, 320, NC, K)
    np.testing.assert_allclose(back[:, 0], 320 - rows[:, 0])
    np.testing.assert_array_equal(back[:, 1:6], rows[:, 1:6])  # y, w, h, obj, person class unchanged
    np.testing.assert_array_equal(back[:, 6:6 + K], rows[:, 6:6 + K][:, list(FLIP_PERM)])  # left eye <-> right eye
    kp, kp_back = rows[:, 5 + NC:].reshape(7, K, 2), back[:, 5 + NC:].reshape(7, K, 2)
    np.testing.assert_allclose(kp_back[:, 1, 0], 320 - kp[:, 2, 0])  # the left eye is the mirrored right eye
    np.testing.assert_allclose(kp_back[:, 1, 1], kp[:, 2, 1])
    np.testing.assert_allclose(deflip_rows(back, 320, NC, K), rows, atol=1e-4)  # flipping twice: identity


# ------------------------------------------------------------------ the fast path against today's decoder
# kapao_decode.postprocess thresholds objectness on the raw logits, decodes only candidate rows and the kept poses'
# keypoints, and runs a block-wise NMS; tests/kapao_decode_before.py keeps the decoder it replaced (decode every
# row, then threshold; one NMS iteration per kept box). Both must give the same poses in the same order, bit for bit.


DETECTOR_THRESHOLDS = kd.Thresholds(conf_thres=0.05, iou_thres=0.6, max_det=100, use_kp_dets=False)


def assert_identical(got: list[Poses], ref: list) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        for name in ("boxes", "scores", "keypoints"):
            a, b = getattr(g, name), getattr(r, name)
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def check_against_before(grids, thresholds=kd.COCO_THRESHOLDS, letterboxes=None, strides=STRIDES, anchors=ANCHORS,
                         nc=NC, k=K) -> list[Poses]:
    """postprocess (fast) == the old decoder; decode, decode_candidates and postprocess_rows on candidates agree."""
    got = kd.postprocess(grids, strides, anchors, nc, k, letterboxes, thresholds)
    ref = before.postprocess(grids, strides, anchors, nc, k, letterboxes, thresholds)
    assert_identical(got, ref)
    rows = kd.decode(grids, strides, anchors, nc, k)
    np.testing.assert_array_equal(rows, before.decode(grids, strides, anchors, nc, k))
    lbs = letterboxes if letterboxes is not None else [None] * len(rows)
    for n, (cand_rows, index) in enumerate(kd.decode_candidates(grids, strides, anchors, nc, k, thresholds)):
        assert (np.diff(index) > 0).all()
        np.testing.assert_array_equal(cand_rows, rows[n, index])
        assert_identical([kd.postprocess_rows(cand_rows, nc, k, lbs[n], thresholds)], [ref[n]])
    return got


def grids_like(rng, n=2, size=(256, 320), obj=(-3.0, 2.5), other=(-3.0, 2.5), nc=NC, k=K):
    depth = 5 + nc + 2 * k
    grids = []
    for s in STRIDES:
        g = rng.normal(other[0], other[1], (n, 3 * depth, size[0] // s, size[1] // s)).astype(np.float32)
        g[:, 4::depth] = rng.normal(obj[0], obj[1], g[:, 4::depth].shape)
        grids.append(g)
    return grids


@pytest.mark.parametrize("thresholds", [kd.COCO_THRESHOLDS, DEPLOY.single_stage,
                                        kd.Thresholds(max_det=20, max_nms=100),  # caps bite
                                        kd.Thresholds(conf_thres=0.3, conf_thres_kp=0.1, iou_thres=0.3)])
def test_fast_postprocess_equals_before_on_random_grids(thresholds):
    rng = np.random.default_rng(11)
    letterboxes = [fit((240, 320), (256, 320)), fit((500, 300), (256, 320))]
    grids = grids_like(rng)
    got = check_against_before(grids, thresholds, letterboxes)
    assert sum(len(g) for g in got) > 10 and sum(int((g.keypoints[..., 2] > 0).sum()) for g in got) > 0
    check_against_before([g.astype(np.float16) for g in grids], thresholds, letterboxes)  # an FP16 engine's outputs


def test_fast_postprocess_equals_before_on_busy_scenes():
    """Many candidates at conf 0.001 with boxes of about an anchor's size (the benchmark's scene, smaller)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from decoder_workloads import kapao_workload

    grids, letterboxes = kapao_workload(np.random.default_rng(12), images=2, size=640, persons=6)
    got = check_against_before(grids, kd.COCO_THRESHOLDS, letterboxes)
    assert all(len(g) == 300 for g in got)
    assert sum(int((g.keypoints[..., 2] > 0).sum()) for g in got) > 20


@pytest.mark.parametrize("staged_rows", [0, 10**9])
def test_both_ways_of_testing_candidates_equal_before(monkeypatch, staged_rows):
    """Rows above the logit floor are tested all channels at once (few) or in stages (many): force each way on
    random, adversarial-ish and busy grids, at both settings."""
    monkeypatch.setattr(kd, "_STAGED_ROWS", staged_rows)
    rng = np.random.default_rng(31)
    letterboxes = [fit((240, 320), (256, 320)), fit((500, 300), (256, 320))]
    grids = grids_like(rng, obj=(-1.0, 3.0))
    grids[0][:, 4::D][rng.random(grids[0][:, 4::D].shape) < 0.05] = np.nan
    for thresholds in (kd.COCO_THRESHOLDS, DEPLOY.single_stage):
        check_against_before(grids, thresholds, letterboxes)
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from decoder_workloads import kapao_workload

    busy, boxes = kapao_workload(np.random.default_rng(32), images=1, size=640, persons=4)
    got = check_against_before(busy, kd.COCO_THRESHOLDS, boxes)
    assert len(got[0]) == 300


def test_fast_postprocess_equals_before_on_adversarial_grids():
    rng = np.random.default_rng(13)
    grids = grids_like(rng, obj=(-1.0, 3.0))
    depth = D
    for g in grids:  # non-finite values in every kind of channel, and ties
        for value in (np.nan, np.inf, -np.inf):
            mask = rng.random(g.shape) < 0.002
            g[mask] = value
        g[:, 4::depth][rng.random(g[:, 4::depth].shape) < 0.05] = np.nan
    # identical rows in neighbouring cells: equal scores, equal or near-equal boxes (ties broken by row index)
    grids[1][:, :, 3, 4] = grids[1][:, :, 3, 5] = grids[1][:, :, 4, 4] = grids[1][:, :, 2, 2]
    grids[0][:, 0:depth, 10, 10] = grids[0][:, depth:2 * depth, 10, 10] = 5.0
    check_against_before(grids)
    check_against_before(grids, DEPLOY.single_stage)


@pytest.mark.parametrize("conf", [0.001, 0.2, 0.25, 0.5, 0.7, 0.9999])
def test_objectness_exactly_at_the_threshold(conf):
    """Every float32 logit around logit(conf): the rows kept are exactly those whose decoded objectness > conf."""
    center = np.float32(np.log(conf) - np.log1p(-conf))
    step = max(float(np.spacing(center)), 1e-8)  # consecutive float32 values (finer steps around 0)
    raw = np.unique((center + np.arange(-3000, 3000) * step).astype(np.float32))
    obj = kd.sigmoid(raw)
    above = obj > conf
    assert above.any() and not above.all()
    if conf == 0.5:  # sigmoid(0) is exactly 0.5: rows with objectness equal to the threshold are among them
        assert (obj == np.float32(conf)).any()
    assert (raw[above] >= kd.logit_floor(conf)).all()  # the floor lets every kept row through
    # end to end: those logits as objectness of person rows, in one image
    grids = empty_grids(n=1, size=(512, 768))
    flat = grids[0][0].reshape(3, D, -1)
    count = min(len(raw), flat.shape[2])
    flat[0, 4, :count] = raw[:count]
    flat[0, 5, :count] = 30.0  # person class probability 1: conf = obj
    flat[0, 2:4, :count] = -30.0  # tiny boxes: no NMS suppression between them
    t = kd.Thresholds(conf_thres=conf, conf_thres_kp=conf, max_det=10**6, max_nms=10**6)
    (got,) = check_against_before(grids, t)
    assert len(got) == int((kd.sigmoid(raw[:count]) * np.float32(1.0) > conf).sum())


def test_logit_floor_edges():
    assert kd.logit_floor(0.0) == -np.inf and kd.logit_floor(-1.0) == -np.inf
    assert kd.logit_floor(1.0) == np.inf
    assert kd.logit_floor(0.001) < np.log(0.001 / 0.999) < kd.logit_floor(0.001) + 1e-3


@pytest.mark.parametrize("case", ["empty", "everything", "nan_objectness", "one_image_empty"])
def test_fast_postprocess_equals_before_at_the_extremes(case):
    rng = np.random.default_rng(14)
    if case == "empty":
        grids = empty_grids(n=2)
    elif case == "everything":  # every row a candidate: over max_nms, NMS over thousands
        grids = grids_like(rng, obj=(30.0, 0.1))
    elif case == "nan_objectness":
        grids = grids_like(rng)
        for g in grids:
            g[:, 4::D] = np.nan
    else:
        grids = grids_like(rng)
        for g in grids:
            g[0, 4::D] = -np.inf
    got = check_against_before(grids, kd.Thresholds(max_nms=3000))
    if case in ("empty", "nan_objectness"):
        assert all(len(g) == 0 for g in got)
    if case == "one_image_empty":
        assert len(got[0]) == 0 and len(got[1]) > 0


def test_fast_postprocess_person_detector():
    rng = np.random.default_rng(15)
    grids = grids_like(rng, nc=1, k=0, obj=(-2.0, 3.0))
    for t in (kd.COCO_THRESHOLDS, DETECTOR_THRESHOLDS):
        got = check_against_before(grids, t, nc=1, k=0)
        assert all(g.keypoints.shape == (len(g), 0, 3) for g in got) and sum(len(g) for g in got) > 10


@pytest.mark.parametrize("name", ["kapao-tiny", "det-tiny"])
@pytest.mark.parametrize("objectness_shift", [0.0, 4.0])
def test_fast_postprocess_equals_before_on_model_outputs(name, objectness_shift):
    """A real network's raw grids (random weights; shifted objectness logits give many more candidates)."""
    from pose_edge.models import kapao

    preset = kapao.PRESETS[name]
    torch.manual_seed(0)
    model = kapao.build_model(preset).eval()
    meta = kapao.model_meta(preset)
    images = torch.rand(2, 3, *preset.input_size)
    with torch.no_grad():
        grids = [g.numpy().copy() for g in model(images)]
    depth = 5 + meta.num_classes + 2 * meta.num_keypoints
    for g in grids:
        g[:, 4::depth] += objectness_shift
    letterboxes = [fit((240, 320), preset.input_size)] * 2
    for t in (kd.COCO_THRESHOLDS, DETECTOR_THRESHOLDS):
        check_against_before(grids, t, letterboxes, meta.strides, meta.anchors, meta.num_classes,
                             meta.num_keypoints)


def test_test_time_augmentation_rows_concatenated_from_candidates():
    """The pipeline's TTA: candidate rows of each pass, transformed and concatenated pass after pass, give what
    all decoded rows of all passes give."""
    from pose_edge.runtime.single_stage import deflip_rows

    rng = np.random.default_rng(16)
    passes = [grids_like(rng, n=2), grids_like(rng, n=2)]
    letterboxes = [fit((240, 320), (256, 320))] * 2
    full = np.concatenate([before.decode(passes[0], STRIDES, ANCHORS, NC, K),
                           deflip_rows(before.decode(passes[1], STRIDES, ANCHORS, NC, K), 320, NC, K)], axis=1)
    first = kd.decode_candidates(passes[0], STRIDES, ANCHORS, NC, K)
    second = kd.decode_candidates(passes[1], STRIDES, ANCHORS, NC, K)
    for n in range(2):
        rows = np.concatenate([first[n][0], deflip_rows(second[n][0], 320, NC, K)])
        ref = before.postprocess_rows(full[n], NC, K, letterboxes[n])
        assert_identical([kd.postprocess_rows(rows, NC, K, letterboxes[n])], [ref])
        assert len(ref) > 10


# ------------------------------------------------------------------ NMS: the block-wise fixed point and its fallbacks


def nms_cases():
    rng = np.random.default_rng(17)
    boxes = random_boxes(rng, 2000, scale=300.0)
    scores = rng.uniform(0, 1, 2000).astype(np.float32)
    yield "random", boxes, scores, rng.integers(0, 3, 2000), 0.5
    # a chain: each box overlaps the next enough to be suppressed by it, the one after that not
    chain = np.array([[3.0 * i, 0, 3.0 * i + 10, 10] for i in range(300)], np.float32)
    yield "chain", chain, np.linspace(1, 0.1, 300).astype(np.float32), np.zeros(300, int), 0.5
    ties = np.round(random_boxes(rng, 600, quantum=1 / 4, scale=60.0) * 4) / 4
    yield "ties", ties, (rng.integers(0, 4, 600) / 4).astype(np.float32), rng.integers(0, 2, 600), 0.3
    degenerate = random_boxes(rng, 300)
    degenerate[::7, 2] = degenerate[::7, 0]  # zero width
    degenerate[::11] = np.nan
    degenerate[::13, 2] = np.inf
    yield "degenerate", degenerate, rng.uniform(0, 1, 300).astype(np.float32), np.zeros(300, int), 0.4
    yield "zero_threshold", boxes[:500], scores[:500], np.zeros(500, int), 0.0
    yield "negative_threshold", boxes[:100], scores[:100], np.zeros(100, int), -0.1


@pytest.mark.parametrize("max_keep", [None, 1, 50])
def test_nms_equals_before_on_hard_cases(max_keep):
    for name, boxes, scores, classes, thr in nms_cases():
        got = kd.nms(boxes, scores, classes, thr, max_keep)
        np.testing.assert_array_equal(got, before.nms(boxes, scores, classes, thr, max_keep), err_msg=name)
        # torchvision offsets boxes by class * (largest coordinate + 1): an infinite coordinate makes every IoU NaN
        if max_keep is None and name not in ("negative_threshold", "degenerate"):
            np.testing.assert_array_equal(got, torchvision_keep(boxes, scores, classes, thr), err_msg=name)


@pytest.mark.parametrize("count", [2, 3, 17, 64])
def test_nms_of_a_few_boxes_equals_before_on_hard_cases(count):
    """Up to _ALL_PAIRS_BOXES boxes NMS tests every pair of one class: the hard cases cut to that size."""
    assert count <= kd._ALL_PAIRS_BOXES
    suppressed = 0
    for name, boxes, scores, classes, thr in nms_cases():
        b, s, c = boxes[:count], scores[:count], classes[:count]
        for max_keep in (None, 1, 5):
            got = kd.nms(b, s, c, thr, max_keep)
            np.testing.assert_array_equal(got, before.nms(b, s, c, thr, max_keep), err_msg=f"{name} {max_keep}")
        suppressed += count - len(kd.nms(b, s, c, thr))
    assert suppressed > 0


def test_nms_fallbacks_give_the_same_result(monkeypatch):
    """Force the loop over kept boxes (too many pairs; too many fixed-point rounds): same kept indices."""
    cases = list(nms_cases())
    expected = [kd.nms(b, s, c, t) for _, b, s, c, t in cases]
    for limit in ("_MAX_PAIRS", "_MAX_FIXED_POINT_ROUNDS"):
        with monkeypatch.context() as m:
            m.setattr(kd, limit, 1)
            for (name, b, s, c, t), keep in zip(cases, expected):
                np.testing.assert_array_equal(kd.nms(b, s, c, t), keep, err_msg=f"{name} {limit}")


@pytest.mark.parametrize("count", [400, 5000])  # below and above _ARGMAX_ROWS: the two ways to the best class
def test_select_candidates_equals_before_with_ties_between_classes(count):
    """Equal class confidences: the best class is the first of them (np.argmax's rule), for either pass."""
    rng = np.random.default_rng(18)
    rows = rng.uniform(0, 1, (count, D)).astype(np.float32)
    rows[:, 4:5 + NC] = np.round(rows[:, 4:5 + NC] * 4) / 4  # few distinct values: many ties
    rows[::5, 5] = 0.0  # keypoint classes tie among themselves, the person class out of the running
    rows[::97, 4:5 + NC] = np.nan
    for conf, classes in ((0.001, [0]), (0.2, range(1, 1 + K)), (0.05, None), (0.3, [3, 7, 40])):
        got = kd.select_candidates(rows, NC, conf, classes, 10**6)
        ref = before.select_candidates(rows, NC, conf, classes, 10**6)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
        assert len(got[0]) > count // 50
