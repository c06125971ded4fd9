"""Writers: what they write reads back (the .mp4 in OpenCV, JSON Lines line by line, COCO results in pycocotools),
nothing partial ever sits under the final name, an unwritable path fails before any work."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose_edge.errors import PoseEdgeError
from pose_edge.keypoints import PERSON_CATEGORY
from pose_edge.runtime.draw import draw_poses
from pose_edge.runtime.sources import Frame
from pose_edge.runtime.writers import (CocoResultsWriter, ImageFolderWriter, JsonLinesWriter, VideoWriter,
                                       coco_image_id, open_overlay_writer)

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_poses import poses_of, standing_person  # noqa: E402


def _frame(index: int, name: str | None = None, size=(160, 120)) -> Frame:
    image = np.full((size[1], size[0], 3), 60 + 10 * index, np.uint8)
    return Frame(image, index, 100.0 + index / 30, name or f"frame {index:06d}", index / 30)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_mp4_overlay_reads_back_with_the_right_frame_count(tmp_path):
    path = tmp_path / "out" / "overlay.mp4"
    with open_overlay_writer(path, fps=10) as writer:
        assert isinstance(writer, VideoWriter) and writer.codec in ("mp4v", "avc1")
        for i in range(12):
            frame = _frame(i)
            poses = poses_of(standing_person(20 + 5 * i, 10, 40, 100)[None], track_ids=[3])
            writer.write(draw_poses(frame.image, poses.keypoints, poses.boxes, poses.scores, poses.track_ids))
        assert not path.exists(), "the final name appeared before close"
    assert _files(path.parent) == ["overlay.mp4"]  # the temporary file was renamed, nothing else left
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and cap.get(cv2.CAP_PROP_FPS) == 10
    frames = []
    while (ok_image := cap.read())[0]:
        frames.append(ok_image[1])
    cap.release()
    assert len(frames) == 12 and frames[0].shape == (120, 160, 3)


def test_a_failing_video_leaves_no_file(tmp_path):
    path = tmp_path / "overlay.mp4"
    with pytest.raises(PoseEdgeError, match="a 80x60 frame in a 160x120 video"):
        with VideoWriter(path, fps=25) as writer:
            writer.write(_frame(0).image)
            writer.write(_frame(1, size=(80, 60)).image)  # cv2.VideoWriter would drop it silently
    assert _files(tmp_path) == []
    with pytest.raises(PoseEdgeError, match="no frames were written"):
        with VideoWriter(path, fps=25):
            pass
    assert _files(tmp_path) == []


def test_image_folder_overlays(tmp_path):
    out = tmp_path / "overlays"
    with open_overlay_writer(out) as writer:
        assert isinstance(writer, ImageFolderWriter)
        for frame in (_frame(0, "a.png"), _frame(1, "frame 000001"), _frame(2, "sub/a.png")):
            writer.write(frame.image, frame.name, frame.index)
    assert _files(out) == ["a.jpg", "a_2.jpg", "frame_000001.jpg"]
    image = cv2.imread(str(out / "frame_000001.jpg"))
    assert image.shape == (120, 160, 3) and abs(float(image.mean()) - 70) < 2


def test_json_lines_one_parsable_line_per_frame(tmp_path):
    path = tmp_path / "poses.jsonl"
    people = [poses_of(np.zeros((0, 17, 3))),
              poses_of(standing_person(10, 20, 30, 90)[None], scores=[0.75], track_ids=np.array([4])),
              poses_of(np.stack([standing_person(10, 20, 30, 90), standing_person(80, 5, 30, 90)]))]
    people[2].keypoints[1, 3, 0] = np.nan
    with JsonLinesWriter(path) as writer:
        for i, poses in enumerate(people):
            writer.write(_frame(i), poses)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["index"] for r in records] == [0, 1, 2] and records[1]["name"] == "frame 000001"
    assert records[1]["timestamp"] == pytest.approx(100 + 1 / 30, abs=1e-6)
    assert records[1]["video_time"] == pytest.approx(1 / 30, abs=1e-6)
    assert [len(r["poses"]) for r in records] == [0, 1, 2]
    pose = records[1]["poses"][0]
    assert pose["track_id"] == 4 and pose["score"] == 0.75
    assert np.allclose(pose["keypoints"], people[1].keypoints[0], atol=0.01)
    assert np.allclose(pose["box"], people[1].boxes[0], atol=0.01)
    assert records[2]["poses"][1]["keypoints"][3][0] is None  # NaN becomes null: the line stays valid JSON
    assert records[2]["poses"][0]["track_id"] is None


def _ground_truth(tmp_path):
    """Two 160x120 images with one and two people, as a COCO keypoints file."""
    people = {1: [standing_person(10, 10, 40, 100, 2)], 2: [standing_person(20, 5, 35, 100, 2),
                                                            standing_person(100, 12, 30, 95, 2)]}
    annotations = []
    for image_id, kps in people.items():
        for k in kps:
            x0, y0 = k[:, :2].min(0)
            x1, y1 = k[:, :2].max(0)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "keypoints": k.reshape(-1).tolist(), "num_keypoints": 17,
                                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                "area": float((x1 - x0) * (y1 - y0))})
    gt = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 160, "height": 120} for i in people],
          "annotations": annotations, "categories": [PERSON_CATEGORY]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, people


def test_coco_results_load_in_pycocotools_and_score_perfect_for_the_truth(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    gt_path, people = _ground_truth(tmp_path)
    results = tmp_path / "results.json"
    with CocoResultsWriter(results) as writer:
        for index, (image_id, kps) in enumerate(people.items()):
            truth = np.stack(kps)
            truth[:, :, 2] = 0.9  # results carry a confidence where the ground truth has visibility
            writer.write(_frame(index, f"{image_id:012d}.jpg"), poses_of(truth))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_module.COCO(str(gt_path))
        dt = gt.loadRes(str(results))
        evaluation = cocoeval.COCOeval(gt, dt, "keypoints")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert len(dt.anns) == 3 and sorted({a["image_id"] for a in dt.anns.values()}) == [1, 2]
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_coco_image_ids():
    assert coco_image_id("000000397133.jpg", 5) == 397133
    assert coco_image_id("dog.png", 5) == 5


def test_coco_results_refuse_colliding_image_ids(tmp_path):
    with pytest.raises(PoseEdgeError, match="both have COCO image id 7"):
        with CocoResultsWriter(tmp_path / "r.json") as writer:
            writer.write(_frame(7, "7.png"), poses_of(np.zeros((0, 17, 3))))
            writer.write(_frame(7, "cat.png"), poses_of(np.zeros((0, 17, 3))))
    assert _files(tmp_path) == []


@pytest.mark.parametrize("make", [
    lambda p: VideoWriter(p / "o.mp4"), lambda p: JsonLinesWriter(p / "o.jsonl"),
    lambda p: CocoResultsWriter(p / "o.json"), lambda p: ImageFolderWriter(p),
])
def test_unwritable_output_is_a_one_line_error_at_construction(tmp_path, make):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(PoseEdgeError, match=r"file.*cannot write") as info:
        make(blocker / "sub")
    assert "\n" not in str(info.value)


def test_file_writers_refuse_a_folder_and_unknown_suffixes(tmp_path):
    with pytest.raises(PoseEdgeError, match="is a folder"):
        JsonLinesWriter(tmp_path)
    with pytest.raises(PoseEdgeError, match="folder or a .mp4 / .avi file"):
        open_overlay_writer(tmp_path / "overlay.gif")
    assert _files(tmp_path) == []
