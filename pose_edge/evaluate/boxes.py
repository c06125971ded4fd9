"""Person boxes for evaluating a top-down model without its detector: the ground truth, or a COCO detections file
(e.g. the Simple Baselines paper's COCO_val2017_detections_AP_H_56_person.json).

Both return boxes as the runtime takes them: float64 [P, 4] (x1, y1, x2, y2) in image pixels and scores [P]. The
pipeline itself drops non-finite or empty boxes and clips the rest to the frame (pose_edge.runtime.topdown).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pose_edge.errors import DataError, PoseEdgeError


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


class GroundTruthBoxes:
    """The non-crowd person boxes of the annotations (score 1), for `boxes_for(image_id, image)`."""

    def __init__(self, coco, min_keypoints: int = 0):
        self.coco = coco
        self.min_keypoints = min_keypoints

    def boxes_for(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)
                and a.get("category_id", 1) == 1 and a.get("num_keypoints", 1) >= self.min_keypoints]
        boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        return xywh_to_xyxy(boxes), np.ones(len(boxes))


class DetectionBoxes:
    """Person boxes from a COCO detections JSON ([{image_id, category_id, bbox, score}, ...]), as the reference's
    COCO_val2017_detections_AP_H_56_person.json; keeps category 1 with score >= min_score."""

    def __init__(self, path: str | Path, min_score: float = 0.0):
        path = Path(path)
        try:
            records = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read detections ({e})") from None
        if not isinstance(records, list):
            raise DataError(f"{path}: detections must be a JSON list of {{image_id, category_id, bbox, score}}")
        self.by_image: dict[int, list] = {}
        for r in records:
            try:
                if int(r.get("category_id", 1)) != 1 or float(r["score"]) < min_score:
                    continue
                box = [float(v) for v in r["bbox"]]
                if len(box) != 4:
                    raise ValueError
                self.by_image.setdefault(int(r["image_id"]), []).append((box, float(r["score"])))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DataError(f"{path}: malformed detection record {repr(r)[:100]}") from None

    def boxes_for(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        dets = self.by_image.get(image_id, [])
        boxes = np.array([d[0] for d in dets], np.float64).reshape(-1, 4)
        return xywh_to_xyxy(boxes), np.array([d[1] for d in dets], np.float64)


def box_source(boxes, coco):
    """"gt" (the split's annotations) or a detections .json path -> a source with boxes_for(image_id)."""
    if boxes == "gt":
        return GroundTruthBoxes(coco)
    if isinstance(boxes, (str, Path)) and str(boxes).endswith(".json"):
        return DetectionBoxes(boxes)
    raise PoseEdgeError(f"boxes {str(boxes)!r}: expected `gt`, a COCO detections .json or a person detector")
