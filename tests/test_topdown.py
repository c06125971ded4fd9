"""The torch-free top-down pipeline: crop geometry, heatmap codec, flip test, rescoring, OKS-NMS, upstream boxes
and the evaluation's box sources.

A hand-written heatmap model (`ColourDotModel`) stands in for a network where the property under test is the
geometry: it finds coloured dots in each crop and returns Gaussian heatmaps at their centroids, labelling the two
dots of a left/right pair by their side, as a network labels a person's left and right by appearance. It is exactly
flip-equivariant with the pair swap, so the flip test must reproduce the unflipped keypoints.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pose_edge.errors import DataError, PoseEdgeError
from pose_edge.estimator import Estimator
from pose_edge.evaluate.boxes import DetectionBoxes, box_source
from pose_edge.geometry import apply_affine, box_to_center_size, crop_affine, invert_affine
from pose_edge.heatmap_codec import GaussianHeatmapCodec
from pose_edge.keypoints import FLIP_PAIRS, FLIP_PERM, NUM_KEYPOINTS, OKS_SIGMAS
from pose_edge.model_meta import InputSpec, ModelMeta
from pose_edge.runtime.heatmap_decode import decode_heatmaps
from pose_edge.runtime.settings import COCO_EVAL, TopDownSettings
from pose_edge.runtime.topdown import TopDownPipeline, clean_boxes, flip_back, oks_nms, rescore

NO_NMS = TopDownSettings(refine="dark", oks_nms=None)

INPUT = (128, 96)
# One colour direction (B, G, R) per group: the nose, then the eight left/right pairs in FLIP_PAIRS order.
GROUP_COLOURS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1), (2, 1, 0),
                          (0, 1, 2)], np.float64)
GROUP_COLOURS /= np.linalg.norm(GROUP_COLOURS, axis=1, keepdims=True)


def group_of(k: int) -> tuple[int, bool | None]:
    """(group, is_left) of keypoint k: group 0 is the nose; left keypoints have odd indices."""
    if k == 0:
        return 0, None
    for g, (left, right) in enumerate(FLIP_PAIRS, start=1):
        if k in (left, right):
            return g, k == left
    raise AssertionError(k)


class ColourDotModel:
    """A Backend: heatmaps [N, 17, 32, 24] with a Gaussian at each keypoint's dot centroid in the crop."""

    def __init__(self):
        self.meta = ModelMeta("simple_baseline", "colour-dots", InputSpec(*INPUT), heatmap_stride=4,
                              extra={"sigma": 1.0, "dark_kernel": 3})
        self.codec = GaussianHeatmapCodec(INPUT, 4, 1.0)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        x = images.astype(np.float64)
        intensity = np.linalg.norm(x, axis=-1)
        direction = x / np.maximum(intensity, 1e-9)[..., None]
        cols = np.arange(INPUT[1])[None, :].repeat(INPUT[0], 0)
        rows = np.arange(INPUT[0])[:, None].repeat(INPUT[1], 1)
        out = []
        for n in range(len(images)):
            kps = np.zeros((NUM_KEYPOINTS, 3))
            for k in range(NUM_KEYPOINTS):
                g, is_left = group_of(k)
                w = intensity[n] * ((intensity[n] > 40) & (direction[n] @ GROUP_COLOURS[g] > 0.995))
                if is_left is not None:  # the pair's two dots: the person's left one is on the image's right
                    cx = (w * cols).sum() / w.sum()
                    w = w * ((cols > cx) if is_left else (cols < cx))
                kps[k] = (w * cols).sum() / w.sum(), (w * rows).sum() / w.sum(), 2
            out.append(self.codec.encode(kps)[0])
        return [np.stack(out)]


def draw_person(image: np.ndarray, keypoints: np.ndarray) -> None:
    """Gaussian dots (sigma 1.2 px) of each keypoint's group colour at sub-pixel positions, added into `image`."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    canvas = image.astype(np.float64)
    for k, (x, y) in enumerate(keypoints):
        blob = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.2**2))
        canvas += 250 * blob[..., None] * GROUP_COLOURS[group_of(k)[0]] / GROUP_COLOURS[group_of(k)[0]].max()
    image[:] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def random_person(rng, center, spread):
    """17 keypoints around `center`, the left one of each pair to the right of the right one (a front view)."""
    kps = np.zeros((NUM_KEYPOINTS, 2))
    kps[0] = center + rng.uniform(-3, 3, 2)
    for i, (left, right) in enumerate(FLIP_PAIRS):
        y = center[1] + (i - 3.5) * spread / 4 + rng.uniform(-2, 2)
        dx = rng.uniform(0.25, 0.5) * spread
        kps[left] = (center[0] + dx + rng.uniform(-1, 1), y)
        kps[right] = (center[0] - dx + rng.uniform(-1, 1), y + rng.uniform(-2, 2))
    return kps


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    image = np.zeros((240, 320, 3), np.uint8)
    people = [random_person(rng, np.array([90.3, 120.6]), 70.0), random_person(rng, np.array([230.8, 110.2]), 60.0)]
    for kps in people:
        draw_person(image, kps)
    boxes = np.array([[k[:, 0].min() - 12, k[:, 1].min() - 12, k[:, 0].max() + 12, k[:, 1].max() + 12]
                      for k in people])  # xyxy
    return image, np.stack(people), boxes


# ---------------------------------------------------------------------------------------------------------------
# Geometry


def test_box_to_center_size_fixes_the_aspect_and_pads():
    center, size = box_to_center_size(np.array([[10, 20, 30, 100], [0, 0, 90, 40]]), 0.75, 1.25)
    np.testing.assert_allclose(center, [[25, 70], [45, 20]])
    np.testing.assert_allclose(size, [[75 * 1.25, 100 * 1.25], [90 * 1.25, 120 * 1.25]])


def test_crop_affine_maps_box_centre_and_edges():
    center, size = np.array([[100.0, 80.0]]), np.array([[60.0, 80.0]])
    m = crop_affine(center, size, INPUT)
    h, w = INPUT
    pts = np.array([[[100, 80], [70, 80], [130, 40]]], np.float64)
    np.testing.assert_allclose(apply_affine(m, pts)[0], [[(w - 1) / 2, (h - 1) / 2],
                                                          [(w - 1) / 2 - w / 2, (h - 1) / 2],
                                                          [(w - 1) / 2 + w / 2, (h - 1) / 2 - h / 2]])
    flipped = crop_affine(center, size, INPUT, flip=np.array([True]))
    np.testing.assert_allclose(apply_affine(flipped, pts)[0, :, 0], w - 1 - apply_affine(m, pts)[0, :, 0])
    rotated = crop_affine(center, size, INPUT, rotation=np.array([90.0]))
    # Rotating the content counter-clockwise on screen by 90 degrees sends the box's right edge to its top.
    np.testing.assert_allclose(apply_affine(rotated, pts[:, 1:2])[0, 0], [(w - 1) / 2, (h - 1) / 2 + w / 2],
                               atol=1e-9)
    np.testing.assert_allclose(apply_affine(invert_affine(rotated), apply_affine(rotated, pts)), pts, atol=1e-9)


def test_codec_round_trip_is_sub_pixel():
    codec = GaussianHeatmapCodec((256, 192), 4, 2.0)
    rng = np.random.default_rng(1)
    kps = np.concatenate([rng.uniform([20, 20], [172, 236], (NUM_KEYPOINTS, 2)), np.full((NUM_KEYPOINTS, 1), 2)], 1)
    kps[3, 2] = 0  # unlabelled: weight 0 and an empty map
    kps[4, :2] = (-40, 100)  # far outside the crop: weight 0
    maps, weights = codec.encode(kps)
    assert maps.shape == (NUM_KEYPOINTS, 64, 48) and weights[3] == 0 and weights[4] == 0 and maps[3].max() == 0
    assert weights.sum() == NUM_KEYPOINTS - 2
    identity = np.array([[[1.0, 0, 0], [0, 1.0, 0]]])
    decoded = decode_heatmaps(maps[None], codec.heatmap_to_image(identity), "dark", codec.dark_kernel)[0]
    ok = weights > 0
    assert np.abs(decoded[ok, :2] - kps[ok, :2]).max() < 0.1  # input pixels: 0.025 heatmap pixels
    quarter = decode_heatmaps(maps[None], codec.heatmap_to_image(identity), "quarter")[0]
    assert np.abs(quarter[ok, :2] - kps[ok, :2]).max() < 0.3 * 4


# ---------------------------------------------------------------------------------------------------------------
# The pipeline end to end, with the colour-dot model


def test_pipeline_recovers_keypoints_in_image_pixels(scene):
    image, people, boxes = scene
    poses = TopDownPipeline(ColourDotModel(), NO_NMS)(image, boxes)
    assert poses.keypoints.shape == (2, NUM_KEYPOINTS, 3)
    err = np.abs(poses.keypoints[..., :2] - people)
    assert err.max() < 0.3, err.max()  # any half-pixel slip in the crop or heatmap conventions is > 0.5 px here


def test_flip_test_returns_the_unflipped_keypoints(scene):
    image, people, boxes = scene
    plain = TopDownPipeline(ColourDotModel(), NO_NMS)(image, boxes)
    flipped = TopDownPipeline(ColourDotModel(), NO_NMS, flip=True)(image, boxes)
    np.testing.assert_allclose(flipped.keypoints, plain.keypoints, atol=1e-3)
    # The reference's one-column shift belongs to its x_hm = x_in / 4 convention: here it would move every point.
    shifted = TopDownPipeline(ColourDotModel(), NO_NMS, flip=True, flip_shift=True)
    moved = shifted(image, boxes).keypoints[..., 0] - plain.keypoints[..., 0]
    assert (moved > 0.5).all()


def test_flip_back_swaps_pairs_and_reverses_width():
    rng = np.random.default_rng(2)
    hm = rng.random((2, NUM_KEYPOINTS, 8, 6)).astype(np.float32)
    back = flip_back(hm)
    for k in range(NUM_KEYPOINTS):
        np.testing.assert_array_equal(back[:, k], hm[:, FLIP_PERM[k], :, ::-1])
    np.testing.assert_array_equal(flip_back(back), hm)  # flipping twice is the identity
    shifted = flip_back(hm, shift=True)
    np.testing.assert_array_equal(shifted[..., 1:], back[..., :-1])
    np.testing.assert_array_equal(shifted[..., 0], back[..., 0])


def test_crops_go_to_the_backend_as_one_batch(scene):
    image, _, boxes = scene
    calls = []

    class Recording(ColourDotModel):
        def run(self, images):
            calls.append(len(images))
            return super().run(images)

    TopDownPipeline(Recording(), flip=True)(image, boxes)
    assert calls == [4]
    calls.clear()
    TopDownPipeline(Recording(), TopDownSettings(max_batch=3), flip=True)(image, boxes)
    assert calls == [3, 1]


def test_estimator_checks_frames_and_upstream_boxes(scene):
    image, people, boxes = scene
    est = Estimator(ColourDotModel(), settings=COCO_EVAL)
    for bad, match in ((image.astype(np.float32), "uint8"), (np.zeros((0, 0, 3), np.uint8), "empty"),
                       (image[..., 0], "3 colour channels"), (np.zeros((4, 4, 4), np.uint8), "BGRA2BGR"),
                       ([[1, 2, 3]], "numpy array")):
        with pytest.raises(PoseEdgeError, match=match):
            est(bad, boxes)
    with pytest.raises(PoseEdgeError, match="person boxes"):
        est(image)  # a top-down model without a detector needs boxes
    with pytest.raises(PoseEdgeError, match="2 person boxes but 3 box scores"):
        est(image, boxes, np.ones(3))
    assert est(image, np.zeros((0, 4))).keypoints.shape == (0, NUM_KEYPOINTS, 3)
    # Garbage people from an upstream detector are dropped with a warning; the good ones keep their poses.
    garbage = np.array([[np.nan, 0, 10, 10], [5, 5, 5, 50], [np.inf, 1, 2, 3], [400, 300, 500, 400]])
    with pytest.warns(UserWarning, match="4 person box"):
        poses = est(image, np.concatenate([boxes, garbage]), np.ones(6))
    assert len(poses) == 2 and np.isfinite(poses.keypoints).all()
    np.testing.assert_allclose(poses.keypoints[..., :2], est(image, boxes).keypoints[..., :2])
    rgb = Estimator(ColourDotModel(), settings=COCO_EVAL, color="rgb")(np.ascontiguousarray(image[..., ::-1]), boxes)
    np.testing.assert_allclose(rgb.keypoints, est(image, boxes).keypoints)

    class Wrong(ColourDotModel):
        def run(self, images):
            return [np.zeros((len(images), 17, 32), np.float32)]

    with pytest.raises(PoseEdgeError, match="heatmaps"):
        TopDownPipeline(Wrong())(image, boxes)


def test_clean_boxes_drops_garbage_and_clips():
    boxes = np.array([[-5, -5, 50, 60], [10, 10, 10, 20], [0, 0, np.nan, 5], [310, 230, 400, 300], [320, 0, 330, 9]])
    kept, scores, dropped = clean_boxes(boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), (240, 320, 3))
    np.testing.assert_allclose(kept, [[0, 0, 50, 60], [310, 230, 320, 240]])
    np.testing.assert_allclose(scores, [0.9, 0.6])
    assert dropped == 3
    with pytest.raises(PoseEdgeError, match=r"\[P, 4\]"):
        clean_boxes(np.zeros((2, 3)), None, (240, 320, 3))


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def reference_oks_nms(kpts_db, thresh, sigmas=OKS_SIGMAS):
    """A transcription of the reference's oks_nms / oks_iou loop (in_vis_thre None)."""
    scores = np.array([k["score"] for k in kpts_db])
    kpts = np.array([k["keypoints"].flatten() for k in kpts_db])
    areas = np.array([k["area"] for k in kpts_db])
    order = scores.argsort()[::-1]
    keep = []
    vars_ = (sigmas * 2) ** 2
    while order.size > 0:
        i = order[0]
        keep.append(i)
        g, d = kpts[i], kpts[order[1:]]
        xg, yg, xd, yd = g[0::3], g[1::3], d[:, 0::3], d[:, 1::3]
        e = ((xd - xg) ** 2 + (yd - yg) ** 2) / vars_ / ((areas[i] + areas[order[1:]]) / 2 + np.spacing(1))[:, None] / 2
        oks = np.exp(-e).sum(1) / e.shape[1]
        order = order[np.where(oks <= thresh)[0] + 1]
    return keep


def test_oks_nms_matches_the_reference_loop():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 200, (6, NUM_KEYPOINTS, 2))
    # Near-duplicates of some poses, at several distances, so that some are suppressed and some are not.
    dup = base[[0, 0, 2, 3, 3]] + rng.normal(0, 1, (5, NUM_KEYPOINTS, 2)) * np.array([0.5, 2, 1, 6, 0.2])[:, None, None]
    kps = np.concatenate([np.concatenate([base, dup]), rng.uniform(0, 1, (11, NUM_KEYPOINTS, 1))], -1)
    scores = rng.permutation(np.linspace(0.1, 0.9, 11))
    areas = rng.uniform(2000, 6000, 11)
    ours = oks_nms(kps, scores, areas, 0.9)
    ref = reference_oks_nms([{"keypoints": k, "score": s, "area": a} for k, s, a in zip(kps, scores, areas)], 0.9)
    assert ours.tolist() == [int(i) for i in ref]
    assert 6 <= len(ours) < 11
    assert len(oks_nms(kps[:0], scores[:0], areas[:0])) == 0


def test_rescore_averages_confident_keypoints():
    kps = np.zeros((3, NUM_KEYPOINTS, 3))
    kps[0, :, 2] = 0.8
    kps[1, :4, 2], kps[1, 4:, 2] = 0.6, 0.1  # only 4 above 0.2
    kps[2, :, 2] = 0.15  # none above 0.2
    np.testing.assert_allclose(rescore(kps, np.array([1.0, 0.5, 1.0])), [0.8, 0.3, 0.0])


# ---------------------------------------------------------------------------------------------------------------
# The evaluation's box sources


def test_detection_boxes_file(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 100], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.99},  # not a person
        {"image_id": 1, "category_id": 1, "bbox": [300, 10, 50, 100], "score": 0.5},  # clipped to the image
        {"image_id": 2, "category_id": 1, "bbox": [1, 1, 0, 10], "score": 0.5},  # empty
    ]))
    source = box_source(str(path), None)
    boxes, scores = source.boxes_for(1)
    np.testing.assert_allclose(boxes, [[10, 10, 60, 110], [300, 10, 350, 110]])  # xyxy, clipped by the pipeline
    np.testing.assert_allclose(scores, [0.9, 0.5])
    assert len(source.boxes_for(99)[0]) == 0
    assert clean_boxes(*source.boxes_for(2), (240, 320, 3))[2] == 1  # the empty box is dropped there
    path.write_text('[{"image_id": 1, "bbox": [1, 2]')
    with pytest.raises(DataError, match="dets.json"):
        DetectionBoxes(path)
    path.write_text('[{"image_id": 1, "bbox": [1, 2], "score": 1}]')
    with pytest.raises(DataError, match="malformed"):
        DetectionBoxes(path)
    with pytest.raises(PoseEdgeError, match="gt"):
        box_source("boxes.txt", None)
