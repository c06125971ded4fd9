"""KAPAO label encoding: pose objects and keypoint objects, and back."""

from __future__ import annotations

import numpy as np

from pose_edge.data.kapao_labels import KapaoLabels


def people(rng, p=3, size=(256, 320)):
    boxes = np.concatenate([rng.uniform(0, 200, (p, 2)), rng.uniform(10, 100, (p, 2))], 1).astype(np.float32)
    keypoints = np.concatenate([rng.uniform(-20, 340, (p, 17, 2)), rng.integers(0, 3, (p, 17, 1))], 2)
    return boxes, keypoints.astype(np.float32)


def test_encode_writes_pose_and_keypoint_objects():
    rng = np.random.default_rng(0)
    boxes, keypoints = people(rng)
    labels = KapaoLabels(kp_bbox=0.05)
    rows = labels.encode(boxes, keypoints, (256, 320))
    assert rows.shape[1] == 5 + 51 and rows.dtype == np.float32
    poses, kps = rows[rows[:, 0] == 0], rows[rows[:, 0] > 0]
    assert len(poses) == 3
    np.testing.assert_allclose(poses[:, 1:3], boxes[:, :2] + boxes[:, 2:] / 2)
    inside = (keypoints[..., 2] > 0) & (keypoints[..., 0] >= 0) & (keypoints[..., 0] < 320) \
        & (keypoints[..., 1] >= 0) & (keypoints[..., 1] < 256)
    assert len(kps) == inside.sum() > 0
    np.testing.assert_array_equal(kps[:, 3:5], 0.05 * 320)  # square, 5 % of the longest side
    np.testing.assert_array_equal(kps[:, 5:], 0)
    # every keypoint object sits on a labelled keypoint of its class
    person, k = np.nonzero(inside)
    np.testing.assert_array_equal(kps[:, 0], k + 1)
    np.testing.assert_allclose(kps[:, 1:3], keypoints[person, k, :2])


def test_encode_then_decode_recovers_people():
    rng = np.random.default_rng(1)
    boxes, keypoints = people(rng, p=5)
    labels = KapaoLabels()
    back_boxes, back_kps, kp_objects = labels.decode(labels.encode(boxes, keypoints, (256, 320)))
    np.testing.assert_allclose(back_boxes, boxes, atol=1e-4)
    np.testing.assert_array_equal(back_kps, keypoints)
    assert len(kp_objects) and set(kp_objects[:, 2].astype(int)) <= set(range(17))


def test_person_without_keypoints_and_detector_labels():
    labels = KapaoLabels()
    rows = labels.encode([[10, 10, 50, 100]], np.zeros((1, 17, 3)), (256, 256))
    assert rows.shape == (1, 56) and rows[0, 0] == 0
    detector = KapaoLabels(num_keypoints=0)
    rows = detector.encode([[10, 10, 50, 100], [0, 0, 4, 4]], np.zeros((2, 0, 3)), (256, 256))
    np.testing.assert_allclose(rows, [[0, 35, 60, 50, 100], [0, 2, 2, 4, 4]])
    boxes, kps, kp_objects = detector.decode(rows)
    np.testing.assert_allclose(boxes, [[10, 10, 50, 100], [0, 0, 4, 4]])
    assert kps.shape == (2, 0, 3) and kp_objects.shape == (0, 3)
