"""KAPAO label encoding: pose objects and keypoint objects, and back."""

from __future__ import annotations

import numpy as np
import pytest

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


# ------------------------------------------------------------------ training samples (pose_edge.data.kapao_samples)


def test_flip_swaps_left_and_right_and_twice_is_identity():
    from pose_edge.data.kapao_samples import People, flip_people

    rng = np.random.default_rng(2)
    boxes, keypoints = people(rng, p=2)
    keypoints[keypoints[..., 2] == 0] = 0  # unlabelled: (0, 0, 0), as the data set writes them
    flipped = flip_people(People(boxes, keypoints), 320)
    # the left wrist (9) of the flipped person is the mirrored right wrist (10) of the original
    labelled = keypoints[:, 10, 2] > 0
    np.testing.assert_allclose(flipped.keypoints[labelled, 9, 0], 320 - keypoints[labelled, 10, 0])
    np.testing.assert_allclose(flipped.keypoints[:, 9, 1:], keypoints[:, 10, 1:])
    assert (flipped.keypoints[~labelled, 9] == 0).all()
    np.testing.assert_allclose(flipped.boxes[:, 0], 320 - boxes[:, 0] - boxes[:, 2])
    back = flip_people(flipped, 320)
    np.testing.assert_allclose(back.boxes, boxes, atol=1e-4)
    np.testing.assert_allclose(back.keypoints, keypoints, atol=1e-4)


def test_unaugmented_sample_is_the_letterboxed_ground_truth(synth_data):
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.data.kapao_samples import KapaoDataset

    data = CocoKeypoints(synth_data, "val")
    dataset = KapaoDataset(data, (256, 256), "none")
    for index in range(5):
        sample = dataset[index]
        box = sample["letterbox"]
        anns = data.person_annotations(sample["image_id"])
        boxes, kps, kp_objects = KapaoLabels().decode(sample["targets"])
        assert sample["image"].shape == (256, 256, 3) and len(boxes) <= len(anns)
        for b, k in zip(boxes, kps):  # each pose object is an annotation, mapped into the input
            match = [a for a in anns if np.allclose(box.to_input(np.array(a["bbox"][:2])), b[:2], atol=0.5)]
            assert match, "a pose object that is no annotation"
            gt = np.array(match[0]["keypoints"], np.float32).reshape(17, 3)
            seen = gt[:, 2] > 0
            np.testing.assert_allclose(k[seen, :2], box.to_input(gt[seen, :2]), atol=1e-3)


@pytest.mark.parametrize("policy", ["light", "kapao"])
def test_augmented_samples_keep_objects_consistent(synth_data, policy):
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.data.kapao_samples import KapaoDataset

    dataset = KapaoDataset(CocoKeypoints(synth_data, "train"), (256, 256), policy, seed=3)
    dataset.set_epoch(1)
    first = dataset[4]
    assert np.array_equal(first["image"], dataset[4]["image"])  # (seed, epoch, index) decides everything
    dataset.set_epoch(2)
    assert not np.array_equal(first["image"], dataset[4]["image"])
    total = 0
    for index in range(12):
        rows = dataset[index]["targets"]
        boxes, kps, kp_objects = KapaoLabels().decode(rows)
        total += len(rows)
        # everything inside the canvas; keypoint objects are 5 % of 256 px squares on labelled keypoints
        assert (rows[:, 1:3] >= 0).all() and (rows[:, 1:3] <= 256).all()
        np.testing.assert_allclose(rows[rows[:, 0] > 0, 3:5], 12.8, atol=1e-4)
        labelled = kps[..., 2] > 0
        assert (kps[labelled, :2] >= 0).all() and (kps[labelled, :2] < 256).all()
        assert (kps[~labelled] == 0).all()
        # every keypoint of a pose object that lies inside the canvas has its keypoint object of the same class
        for k_index in range(17):
            on_pose = kps[:, k_index][labelled[:, k_index], :2]
            objects = kp_objects[kp_objects[:, 2] == k_index, :2]
            for point in on_pose:
                assert np.abs(objects - point).sum(1).min() < 1e-3
    assert total > 50


def test_unknown_augmentation_policy_is_refused():
    from pose_edge.data.kapao_samples import augment_policy
    from pose_edge.errors import PoseEdgeError

    with pytest.raises(PoseEdgeError, match="unknown augmentation policy"):
        augment_policy("mosaic9")
