"""The built-in synthetic data set: COCO-loadable, deterministic, and labelled as drawn."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from pose_edge.data import synth
from pose_edge.data.coco import CocoKeypoints
from pose_edge.data.synth.body import POSE_KINDS, forward_kinematics, sample_pose, sample_proportions
from pose_edge.data.synth.render import KEYPOINT_PARTS, NUM_PARTS, pixel_of
from pose_edge.data.synth.scene import MAX_FIGURES, annotate, render_scene, sample_scene
from pose_edge.keypoints import FLIP_PAIRS, NUM_KEYPOINTS


def _digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_load_in_pycocotools_unchanged(synth_data):
    for split, count in (("train", 60), ("val", 20)):
        coco = COCO(str(synth_data / "annotations" / f"person_keypoints_{split}.json"))
        assert len(coco.imgs) == count
        assert coco.loadCats(1)[0]["keypoints"][0] == "nose"
        for ann in coco.dataset["annotations"]:
            kps = np.array(ann["keypoints"]).reshape(NUM_KEYPOINTS, 3)
            assert set(np.unique(kps[:, 2])) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
            assert ann["iscrowd"] == 0 and ann["area"] > 0
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and ann["area"] <= w * h
            assert np.all(kps[kps[:, 2] == 0, :2] == 0)
        for im in coco.imgs.values():
            assert (synth_data / "images" / split / im["file_name"]).is_file()
    data = CocoKeypoints(synth_data, "val")
    image = data.load_image(data.image_ids[0])
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8


def test_the_set_is_varied(synth_data):
    anns = COCO(str(synth_data / "annotations" / "person_keypoints_train.json")).dataset["annotations"]
    people_per_image = np.bincount([a["image_id"] for a in anns])
    assert people_per_image.max() <= MAX_FIGURES and len({*people_per_image[people_per_image > 0]}) >= 3
    heights = np.array([a["bbox"][3] for a in anns])
    assert heights.min() < 50 and heights.max() > 150  # small and large people
    v = np.array([a["keypoints"][2::3] for a in anns])
    assert (v == 1).mean() > 0.03 and (v == 2).mean() > 0.3  # occlusion is common, but most is visible
    truncated = [a for a in anns if a["bbox"][0] <= 0 or a["bbox"][1] <= 0
                 or a["bbox"][0] + a["bbox"][2] >= 320 or a["bbox"][1] + a["bbox"][3] >= 240]
    assert truncated


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synth.write_dataset(tmp_path / name, num_train=4, num_val=2, seed=seed, size=(160, 120), progress=False)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".json"))
    assert sum(a[k] != c[k] for k in a if k.endswith(".jpg")) >= 5  # 6 images; an empty scene may repeat


@pytest.mark.parametrize("seed", range(6))
def test_visibility_agrees_with_the_drawing(seed):
    """Occluded keypoints lie under another figure's pixels (or another part of the same body); visible ones on
    the figure's own part. Checked by re-drawing the scene without the figure, independently of the owner map."""
    rng = np.random.default_rng(seed)
    checked_visible = checked_occluded_by_other = 0
    for _ in range(8):
        scene = sample_scene(rng, 320, 240, num_figures=int(rng.integers(3, 7)))
        image, owner = render_scene(scene)
        anns = {a["id"] % 10: a for a in annotate(scene, owner, image_id=1)}
        for f, ann in anns.items():
            without, _ = render_scene(scene, skip=frozenset({f}))
            kps = np.array(ann["keypoints"]).reshape(NUM_KEYPOINTS, 3)
            for k, (x, y, v) in enumerate(kps):
                if v == 0:
                    continue
                px, py = pixel_of((x, y))
                changed = not np.array_equal(image[py, px], without[py, px])
                top = owner[py, px]
                if v == 2:
                    assert changed, f"keypoint {k} of figure {f} is marked visible but the figure is not on top"
                    assert top // NUM_PARTS == f and top % NUM_PARTS in KEYPOINT_PARTS[k]
                    checked_visible += 1
                elif top // NUM_PARTS != f:
                    assert not changed, f"keypoint {k} of figure {f} is marked occluded by someone else, who is not there"
                    checked_occluded_by_other += 1
                else:  # occluded by its own body: a different part, or the torso in front of it
                    assert changed
    assert checked_visible > 50 and checked_occluded_by_other > 0


def test_left_and_right_are_on_the_expected_sides():
    """A person facing the camera has their left side on the image's right; turned away, on the image's left."""
    rng = np.random.default_rng(0)
    props = sample_proportions(rng)
    for yaw, left_is_right in ((0.0, True), (np.pi, False)):
        pose = sample_pose(rng, "standing").__class__(kind="standing", yaw=yaw)
        kp = forward_kinematics(props, pose).keypoints
        for left, right in FLIP_PAIRS:
            assert (kp[left, 0] > kp[right, 0]) == left_is_right


@pytest.mark.parametrize("kind", POSE_KINDS)
def test_poses_keep_plausible_proportions(kind):
    rng = np.random.default_rng(1)
    for _ in range(20):
        props = sample_proportions(rng)
        kp = forward_kinematics(props, sample_pose(rng, kind)).keypoints
        upper_arm = np.linalg.norm(kp[7] - kp[5])
        shin = np.linalg.norm(kp[15] - kp[13])
        assert 0.14 < upper_arm < 0.2 and 0.2 < shin < 0.28  # bone lengths are preserved by every pose
        assert np.linalg.norm(kp[0] - kp[5]) < 0.25  # the head stays on the shoulders


def test_video_clip_is_smooth_and_tracked(tmp_path):
    stats = synth.write_dataset(tmp_path, num_train=0, num_val=0, seed=1, size=(160, 120), video_frames=12,
                                progress=False)
    assert stats["video"]["images"] == 12
    assert (tmp_path / "video.mp4").stat().st_size > 1000
    data = json.loads((tmp_path / "annotations" / "person_keypoints_video.json").read_text())
    frame_of = {im["id"]: im["frame_id"] for im in data["images"]}
    tracks: dict[int, dict[int, np.ndarray]] = {}
    for a in data["annotations"]:
        tracks.setdefault(a["track_id"], {})[frame_of[a["image_id"]]] = np.array(a["keypoints"]).reshape(17, 3)
    steps = []
    for frames in tracks.values():
        for t in frames:
            if t + 1 in frames:
                both = (frames[t][:, 2] > 0) & (frames[t + 1][:, 2] > 0)
                steps += list(np.linalg.norm(frames[t + 1][both, :2] - frames[t][both, :2], axis=1))
    assert steps and np.max(steps) < 15  # a few pixels a frame at 160x120: smooth motion
    assert CocoKeypoints(tmp_path, "video").image_ids
