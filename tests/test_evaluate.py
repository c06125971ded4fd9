"""COCO keypoint evaluation through pycocotools, on the built-in data set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pose_edge.evaluate import scoring as evaluate
from pose_edge.data.coco import load_coco
from pose_edge.errors import DataError
from pose_edge.keypoints import OKS_SIGMAS


@pytest.fixture(scope="module")
def gt(synth_data):
    return load_coco(synth_data / "annotations" / "person_keypoints_val.json")


def _jittered(coco_gt, k: float, seed: int = 0) -> list[dict]:
    """Ground truth with each keypoint moved by k * sigma * sqrt(area) in a random direction: OKS exp(-k^2 / 8)."""
    rng = np.random.default_rng(seed)
    out = []
    for a in coco_gt.dataset["annotations"]:
        if a["num_keypoints"] == 0:
            continue
        kps = np.array(a["keypoints"], dtype=float).reshape(17, 3)
        angle = rng.uniform(0, 2 * np.pi, 17)
        step = k * OKS_SIGMAS * np.sqrt(a["area"])
        kps[:, 0] += step * np.cos(angle)
        kps[:, 1] += step * np.sin(angle)
        out.append({"image_id": a["image_id"], "keypoints": kps.reshape(-1).tolist(), "score": 1.0})
    return out


def test_ground_truth_scores_one(gt):
    stats = evaluate.evaluate_keypoints(gt, evaluate.ground_truth_as_results(gt))
    assert list(stats) == list(evaluate.STAT_NAMES)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


def test_jitter_lowers_ap_monotonically(gt):
    aps = [evaluate.evaluate_keypoints(gt, _jittered(gt, k))["AP"] for k in (0.0, 0.75, 1.25, 2.0, 3.0)]
    assert aps[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(aps, aps[1:])), aps


def test_dropping_keypoints_lowers_ap(gt):
    results = evaluate.ground_truth_as_results(gt)
    dropped = []
    for r in results:
        kps = np.array(r["keypoints"], dtype=float).reshape(17, 3)
        kps[5:11] = 0  # arms missing: predicted at (0, 0) with no confidence
        dropped.append(dict(r, keypoints=kps.reshape(-1).tolist()))
    assert evaluate.evaluate_keypoints(gt, dropped)["AP"] < 0.9


def test_restricted_ground_truth_scores_a_subset_alone(gt):
    """Evaluating on the first few images of a split (training-time evaluation) must not count the people of the
    other images as missed: their ground truth is left out, and the whole split's is returned unchanged."""
    image_ids = sorted(gt.getImgIds())
    few = [i for i in image_ids if gt.getAnnIds(imgIds=[i], iscrowd=False)][:3]
    results = [r for r in evaluate.ground_truth_as_results(gt) if r["image_id"] in few]
    assert evaluate.evaluate_keypoints(evaluate.restricted_gt(gt, few), results)["AR"] == pytest.approx(1.0)
    assert evaluate.evaluate_keypoints(gt, results)["AR"] < 0.9
    assert evaluate.restricted_gt(gt, image_ids) is gt


def test_no_results_scores_zero(gt):
    assert evaluate.evaluate_keypoints(gt, []) == {name: 0.0 for name in evaluate.STAT_NAMES}


def test_results_roundtrip_through_a_file(gt, tmp_path):
    """Poses of the runtime -> COCO results (Poses.to_coco) -> a results file -> pycocotools: the ground truth as
    Poses scores 1.0."""
    from pose_edge.runtime.poses import Poses

    results = []
    for image_id in gt.imgs:
        truth = [r for r in evaluate.ground_truth_as_results(gt) if r["image_id"] == image_id]
        kps = np.array([r["keypoints"] for r in truth], np.float32).reshape(-1, 17, 3)
        results += Poses(kps, np.zeros((len(kps), 4), np.float32), np.ones(len(kps), np.float32)).to_coco(image_id)
    evaluate.write_results(tmp_path / "r.json", results)
    assert evaluate.evaluate_keypoints(gt, tmp_path / "r.json")["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad, message", [
    ([{"image_id": 999_999_999, "keypoints": [0] * 51, "score": 1.0}], "does not contain"),
    ([{"image_id": None, "keypoints": [0] * 50, "score": 1.0}], "does not contain"),
    ([{"keypoints": [0] * 51, "score": 1.0}], "needs image_id"),
])
def test_malformed_results_are_refused(gt, bad, message):
    with pytest.raises(DataError, match=message):
        evaluate.evaluate_keypoints(gt, bad)


def test_nan_results_are_refused(gt):
    r = evaluate.ground_truth_as_results(gt)[0]
    with pytest.raises(DataError, match="finite"):
        evaluate.evaluate_keypoints(gt, [dict(r, keypoints=[float("nan")] * 51)])


def test_corrupt_results_file(gt, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(evaluate.ground_truth_as_results(gt))[:100])
    with pytest.raises(DataError, match=str(path)):
        evaluate.evaluate_keypoints(gt, path)
