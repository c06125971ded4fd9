"""The KAPAO kernels (kernels/kapao_decode.cuh) against the NumPy reference pose_edge.runtime.kapao_decode.

Every test runs on the CPU emulation (the same kernel source compiled by g++) and, marked `gpu`, on a real GPU.

How exact: the kernels' sigmoid uses the platform's float32 exp (glibc's on the CPU, the GPU's expf), NumPy uses its
own (on this CPU it differs from the correctly rounded value in ~40 % of cases), so decoded rows agree to a few
float32 ulps of the sigmoid, not bit for bit (`test_decoded_rows_*`). Everything after the sigmoid -- thresholds,
best class, ordering, capacity, NMS, fusion, letterbox -- is compared bit for bit by feeding the reference the
kernels' own decoded rows (`kapao_decode_rows`, a test kernel using the same device functions). End to end from raw
grids, on objects placed with clear margins, the kept sets are identical and coordinates agree within 2e-3 px.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pose_edge.kernels.emulator import EmulatedDevice
from pose_edge.kernels.launch import KapaoPostprocessor

from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import fit
from pose_edge.runtime import kapao_decode as kd
from pose_edge.runtime.poses import Poses

STRIDES = (8, 16, 32, 64)
ANCHORS = (((19, 27), (44, 40), (38, 94)), ((96, 68), (86, 152), (180, 137)),
           ((140, 301), (303, 264), (238, 542)), ((436, 615), (739, 380), (925, 792)))
NC, K = 18, 17
D = 5 + NC + 2 * K


@pytest.fixture(scope="module", params=["emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "emulated":
        if shutil.which("g++") is None:
            pytest.skip("the CPU emulation needs g++ (C++20)")
        yield EmulatedDevice()
    else:
        from pose_edge.kernels.cuda_device import CudaDevice

        with CudaDevice() as dev:
            yield dev


def grids_like(rng, n=2, size=(128, 192), mean=-3.0, std=2.5, nc=NC, k=K, dtype=np.float32):
    depth = 5 + nc + 2 * k
    return [rng.normal(mean, std, (n, 3 * depth, size[0] // s, size[1] // s)).astype(dtype) for s in STRIDES]


def assert_same_detections(got: Poses, ref: Poses) -> None:
    """Bit for bit: same poses in the same order, same boxes, scores and fused keypoints."""
    assert len(got) == len(ref)
    np.testing.assert_array_equal(got.scores, ref.scores)
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_array_equal(got.keypoints, ref.keypoints)


def check_against_reference_rows(device, grids, thresholds=kd.COCO_THRESHOLDS, letterboxes=None, capacity=1024,
                                 nc=NC, k=K):
    """Run the kernels; run the reference on the kernels' own decoded rows; demand identical results."""
    post = KapaoPostprocessor(device, STRIDES, ANCHORS, nc, k, thresholds, capacity=capacity)
    got = post(grids, letterboxes)
    rows = post.decode_rows(grids)
    effective = kd.Thresholds(**{**thresholds.__dict__, "max_nms": min(thresholds.max_nms, capacity)})
    lbs = letterboxes if letterboxes is not None else [None] * len(rows)
    assert len(got) == len(rows)
    for n in range(len(rows)):
        ref = kd.postprocess_rows(rows[n], nc, k, lbs[n], effective)
        assert_same_detections(got[n], ref)
    return got, rows


def logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)  # targets outside the decodable range saturate
    return np.log(p / (1 - p)).astype(np.float32)


def place(grids, image, level, anchor, gx, gy, cx, cy, w, h, obj, cls, keypoints=None, cls_p=0.95):
    """Raw values that decode to the given object, written into one anchor of one cell."""
    s = STRIDES[level]
    aw, ah = ANCHORS[level][anchor]
    raw = np.full(D, -12.0, np.float32)
    raw[0] = logit(((cx / s - gx) + 0.5) / 2)
    raw[1] = logit(((cy / s - gy) + 0.5) / 2)
    raw[2] = logit(np.sqrt(w / aw) / 2)
    raw[3] = logit(np.sqrt(h / ah) / 2)
    raw[4] = logit(obj)
    raw[5 + cls] = logit(cls_p)
    if keypoints is not None:
        kp = np.asarray(keypoints, np.float64).reshape(K, 2)
        raw[5 + NC::2] = logit(((kp[:, 0] - gx * s) / aw + 2) / 4)
        raw[6 + NC::2] = logit(((kp[:, 1] - gy * s) / ah + 2) / 4)
    grids[level][image, anchor * D:(anchor + 1) * D, gy, gx] = raw


# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_decoded_rows_agree_with_numpy_decode(device, dtype):
    rng = np.random.default_rng(0)
    grids = grids_like(rng, n=2, mean=0.0, std=4.0, dtype=dtype)
    post = KapaoPostprocessor(device, STRIDES, ANCHORS, NC, K)
    got = post.decode_rows(grids)
    ref = kd.decode(grids, STRIDES, ANCHORS, NC, K)
    assert got.shape == ref.shape and got.dtype == np.float32
    # Probabilities within 3 float32 ulps of 1 (glibc's and NumPy's exp; the GPU's expf may add 2 more);
    # coordinates within the same few ulps of the sigmoid times their slope: (2y)^2 * anchor has slope
    # <= 8 * 925 px, so 3.6e-7 * 7400 = 2.7e-3 px.
    ulps = 3 if isinstance(device, EmulatedDevice) else 5
    np.testing.assert_allclose(got[..., 4:5 + NC], ref[..., 4:5 + NC], rtol=0, atol=ulps * 1.2e-7)
    np.testing.assert_allclose(got[..., :4], ref[..., :4], rtol=0, atol=ulps * 0.9e-3)
    np.testing.assert_allclose(got[..., 5 + NC:], ref[..., 5 + NC:], rtol=0, atol=ulps * 0.45e-3)
    assert np.mean(got == ref) > 0.5  # most values are bit-identical anyway


@pytest.mark.parametrize("seed", [0, 1])
def test_random_grids_match_reference_coco_thresholds(device, seed):
    rng = np.random.default_rng(seed)
    grids = grids_like(rng, n=2)
    got, _ = check_against_reference_rows(device, grids)
    assert sum(len(d) for d in got) > 20  # the test saw poses
    assert any((d.keypoints[..., 2] > 0).any() for d in got)  # and fused keypoint objects


def test_random_grids_demo_thresholds_letterboxes_float16(device):
    rng = np.random.default_rng(2)
    grids = grids_like(rng, n=3, mean=-1.0, std=3.0, dtype=np.float16)
    letterboxes = [fit((480, 640), (128, 192)), None, fit((1000, 300), (128, 192))]
    thresholds = kd.Thresholds(conf_thres=0.3, iou_thres=0.45, conf_thres_kp=0.5, iou_thres_kp=0.45,
                               conf_thres_kp_person=0.2, overwrite_tol=25.0)
    got, _ = check_against_reference_rows(device, grids, thresholds, letterboxes)
    assert sum(len(d) for d in got) > 10


def test_more_candidates_than_capacity_keeps_the_best(device):
    # Every row is a candidate of one of the passes (obj ~ 0.95): far more than the capacity of 128.
    rng = np.random.default_rng(3)
    grids = grids_like(rng, n=2, mean=0.0, std=1.0)
    for g in grids:
        for a in range(3):
            g[:, a * D + 4] = rng.uniform(2.0, 4.0, g[:, a * D + 4].shape)
            g[:, a * D + 5, ::2] += 3.0  # every other grid row prefers the person class
    thresholds = kd.Thresholds(max_det=50)
    got, rows = check_against_reference_rows(device, grids, thresholds, capacity=128)
    for n in range(2):
        person = len(kd.select_candidates(rows[n], NC, thresholds.conf_thres, [0], 10**9)[0])
        keypoint = len(kd.select_candidates(rows[n], NC, thresholds.conf_thres_kp, range(1, K + 1), 10**9)[0])
        assert person > 128 and keypoint > 128
        assert got[n].extra["candidates"] == (person, keypoint)
        assert got[n].extra["dropped"] == (person - 128, keypoint - 128)
    # max_nms below the capacity caps as the reference does
    got, _ = check_against_reference_rows(device, grids, kd.Thresholds(max_nms=100, max_det=50), capacity=128)
    assert got[0].extra["dropped"][0] == got[0].extra["candidates"][0] - 100


def test_max_det_stops_the_nms(device):
    rng = np.random.default_rng(4)
    grids = grids_like(rng, n=1, mean=-1.0)
    got, _ = check_against_reference_rows(device, grids, kd.Thresholds(max_det=3))
    assert len(got[0]) == 3


def test_no_detections(device):
    grids = [np.full_like(g, -30.0) for g in grids_like(np.random.default_rng(0), n=2)]
    got, _ = check_against_reference_rows(device, grids)
    assert [len(d) for d in got] == [0, 0]
    assert got[0].extra["candidates"] == (0, 0)


def test_keypoint_objects_without_poses(device):
    grids = [np.full_like(g, -30.0) for g in grids_like(np.random.default_rng(0), n=1)]
    place(grids, 0, 0, 0, 5, 5, 44, 44, 20, 20, 0.9, 3)
    got, _ = check_against_reference_rows(device, grids)
    assert len(got[0]) == 0 and got[0].extra["keypoint_objects"] == 1


def test_ties_resolve_like_the_reference(device):
    # Identical raw rows at many places: equal confidences (ordered by row), identical boxes of one class (only the
    # first survives) and boxes of another class on top (class-aware NMS keeps them), equal fusion distances.
    grids = [np.full_like(g, -30.0) for g in grids_like(np.random.default_rng(0), n=1)]
    rng = np.random.default_rng(5)
    kps = np.stack([rng.uniform(20, 170, K), rng.uniform(20, 110, K)], -1)
    for gx, gy in [(4, 4), (9, 4), (4, 9), (15, 10)]:
        place(grids, 0, 0, 0, gx, gy, gx * 8 + 4, gy * 8 + 4, 30, 60, 0.8, 0, kps)
        place(grids, 0, 0, 1, gx, gy, gx * 8 + 4, gy * 8 + 4, 30, 60, 0.8, 0, kps)  # the very same box again
        place(grids, 0, 0, 2, gx, gy, gx * 8 + 4, gy * 8 + 4, 30, 60, 0.8, 5)  # a keypoint object on it
    for a in range(3):  # identical raw values in a whole level: ties everywhere
        grids[3][0, a * D:(a + 1) * D] = grids[0][0, 0:D, 4:6, 4:7]
    for j in (0, 7, 12):  # keypoint objects at the same distance from every pose: the first pose wins
        kx, ky = kps[j] + 2.0
        place(grids, 0, 1, 2, int(kx // 16), int(ky // 16), kx, ky, 12, 12, 0.9, 1 + j)
    got, _ = check_against_reference_rows(device, grids)
    assert len(got[0]) >= 4
    fused = got[0].keypoints[..., 2] > 0
    assert fused[:, [0, 7, 12]].sum(axis=0).tolist() == [1, 1, 1]  # each object went to one of the tied poses


def test_iou_equal_to_the_threshold_does_not_suppress(device):
    # The two best person boxes overlap; their IoU (float32, as torchvision computes it) becomes the threshold.
    # Strictly greater suppresses, so the second box must survive, as in the reference.
    rng = np.random.default_rng(12)
    grids = grids_like(rng, n=1)
    place(grids, 0, 1, 0, 4, 3, 70, 55, 90, 140, 0.999, 0)
    place(grids, 0, 1, 1, 5, 3, 80, 60, 80, 150, 0.998, 0)
    post = KapaoPostprocessor(device, STRIDES, ANCHORS, NC, K, capacity=1024)
    rows = post.decode_rows(grids)[0]
    index, conf, cls = kd.select_candidates(rows, NC, 0.001, [0], 1024)
    x1, y1, x2, y2 = kd.boxes_xyxy(rows[index[:2]]).T
    area = (x2 - x1) * (y2 - y1)
    inter = np.maximum(np.float32(0), min(x2) - max(x1)) * np.maximum(np.float32(0), min(y2) - max(y1))
    iou = inter / ((area[0] + area[1]) - inter)
    threshold = float(iou)
    assert 0.3 < threshold < 1
    boxes = kd.boxes_xyxy(rows[index])
    assert 1 in kd.nms(boxes, conf, cls, threshold)
    assert 1 not in kd.nms(boxes, conf, cls, float(np.nextafter(iou, np.float32(0))))
    check_against_reference_rows(device, grids, kd.Thresholds(iou_thres=threshold), capacity=1024)


def test_nan_and_inf_in_the_raw_outputs(device):
    rng = np.random.default_rng(6)
    grids = grids_like(rng, n=2, mean=-1.0)
    for g in grids:
        flat = g.reshape(-1)
        for value in (np.nan, np.inf, -np.inf):
            flat[rng.choice(flat.size, flat.size // 50, replace=False)] = value
    got, _ = check_against_reference_rows(device, grids)
    assert sum(len(d) for d in got) > 0


def test_batch_of_zero_images(device):
    post = KapaoPostprocessor(device, STRIDES, ANCHORS, NC, K)
    assert post([np.zeros((0, 3 * D, 128 // s, 192 // s), np.float32) for s in STRIDES]) == []


def test_large_batch(device):
    rng = np.random.default_rng(7)
    grids = grids_like(rng, n=12, size=(64, 128))
    check_against_reference_rows(device, grids, capacity=256)


def test_person_detector_head(device):
    # One class, no keypoints: the person pass only.
    rng = np.random.default_rng(8)
    grids = grids_like(rng, n=2, nc=1, k=0, mean=-2.0)
    got, _ = check_against_reference_rows(device, grids, nc=1, k=0)
    assert sum(len(d) for d in got) > 0 and got[0].keypoints.shape[1:] == (0, 3)


def test_without_keypoint_objects(device):
    rng = np.random.default_rng(9)
    grids = grids_like(rng, n=1)
    got, _ = check_against_reference_rows(device, grids, kd.Thresholds(use_kp_dets=False))
    assert len(got[0]) > 0 and not (got[0].keypoints[..., 2] > 0).any()


def test_end_to_end_from_raw_grids_with_placed_objects(device):
    # Objects with clear margins between scores, boxes and distances: even with NumPy's own float32 decode, the
    # kept sets and the fusion decisions are the same; coordinates agree to the sigmoid's rounding.
    rng = np.random.default_rng(10)
    grids = [np.full_like(g, -30.0) for g in grids_like(rng, n=2, size=(256, 320))]
    for image in range(2):
        for person, (gx, gy) in enumerate([(5, 7), (20, 9), (30, 20)]):
            cx, cy = gx * 8 + 4, gy * 8 + 4
            kps = np.stack([cx + rng.uniform(-30, 30, K), cy + rng.uniform(-60, 60, K)], -1)
            place(grids, image, 0, 1, gx, gy, cx, cy, 40, 100, 0.9 - 0.1 * person, 0, kps)
            place(grids, image, 0, 0, gx + 1, gy, cx + 3, cy + 2, 42, 98, 0.5 - 0.1 * person, 0, kps)  # suppressed
            for j in range(0, K, 3):  # keypoint objects near some keypoints
                kx, ky = kps[j] + rng.uniform(-6, 6, 2)
                place(grids, image, 0, 2, int(kx // 8), int(ky // 8), kx, ky, 12, 12, 0.8 - 0.01 * j, 1 + j)
    letterboxes = [fit((480, 600), (256, 320)), fit((256, 320), (256, 320))]
    post = KapaoPostprocessor(device, STRIDES, ANCHORS, NC, K)
    got = post(grids, letterboxes)
    ref = kd.postprocess(grids, STRIDES, ANCHORS, NC, K, letterboxes)
    for g, r in zip(got, ref):
        assert len(g) == len(r) == 3
        np.testing.assert_allclose(g.scores, r.scores, rtol=1e-6)
        np.testing.assert_allclose(g.boxes, r.boxes, rtol=0, atol=2e-3)
        np.testing.assert_allclose(g.keypoints[..., :2], r.keypoints[..., :2], rtol=0, atol=2e-3)
        np.testing.assert_array_equal(g.keypoints[..., 2] > 0, r.keypoints[..., 2] > 0)
        assert (g.keypoints[..., 2] > 0).sum() >= 3


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CPU emulation needs g++ (C++20)")
def test_one_launch_per_step_and_one_copy_back():
    dev = EmulatedDevice()
    grids = grids_like(np.random.default_rng(11), n=2)
    post = KapaoPostprocessor(dev, STRIDES, ANCHORS, NC, K)
    post(grids)
    assert dev.launches == ["pe_kapao_select_f32", "pe_kapao_sort_f32", "pe_kapao_nms_mask", "pe_kapao_nms_reduce",
                            "pe_kapao_fuse_f32"]
    output_bytes = post.output_layout(2)[1]
    assert dev.to_host == [output_bytes]  # the final poses and counts, in one transfer
    assert output_bytes < 2 * 300 * (4 + 1 + 3 * K + 1) * 4 + 4096


def test_bad_configurations_give_clear_errors(device):
    with pytest.raises(PoseEdgeError, match="capacity"):
        KapaoPostprocessor(device, STRIDES, ANCHORS, NC, K, capacity=100)
    with pytest.raises(PoseEdgeError, match="capacity"):
        KapaoPostprocessor(device, STRIDES, ANCHORS, NC, K, capacity=8192)
    with pytest.raises(PoseEdgeError, match="levels"):
        KapaoPostprocessor(device, STRIDES, ANCHORS[:3], NC, K)
    post = KapaoPostprocessor(device, STRIDES, ANCHORS, NC, K)
    with pytest.raises(PoseEdgeError, match="channels"):
        post([np.zeros((1, 3 * D + 1, 16 // s, 16 // s), np.float32) for s in (1, 2, 4, 8)])
    with pytest.raises(PoseEdgeError, match="float32 or float16"):
        post([np.zeros((1, 3 * D, 4, 4), np.int8) for _ in STRIDES])
    with pytest.raises(PoseEdgeError, match="letterboxes"):
        post(grids_like(np.random.default_rng(0), n=2), [None])
