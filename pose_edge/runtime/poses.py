"""The one result type of the runtime, for both paradigms: the people found in one frame.

    poses = est(frame)
    poses.keypoints   float32 [P, K, 3]  (x, y, confidence) in frame pixels; confidence 0 where a keypoint was not found
    poses.boxes       float32 [P, 4]     (x1, y1, x2, y2) in frame pixels
    poses.scores      float32 [P]        person confidence
    poses.track_ids   int64 [P] or None  identity across frames when tracking is on (-1: not yet confirmed)

A person detector's result is a Poses with K = 0. Rows are sorted by score, highest first, unless tracking reorders
nothing (it never does). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pose_edge.keypoints import NAMES


@dataclass
class Poses:
    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray | None = None
    extra: dict = field(default_factory=dict)  # e.g. "dropped": NMS candidates beyond the decoder's capacity

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, num_keypoints: int) -> "Poses":
        return cls(np.zeros((0, num_keypoints, 3), np.float32), np.zeros((0, 4), np.float32),
                   np.zeros(0, np.float32))

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    def select(self, index) -> "Poses":
        """The rows `index` (a boolean mask or integer indices), as a new Poses."""
        ids = None if self.track_ids is None else self.track_ids[index]
        return Poses(self.keypoints[index], self.boxes[index], self.scores[index], ids, dict(self.extra))

    def finite(self) -> "Poses":
        """These poses with every value finite: a person whose box or score is NaN or infinite is dropped, a keypoint
        with a non-finite x, y or confidence becomes (0, 0, 0), not found. How many of each is added to
        extra["non_finite_people"] and extra["non_finite_keypoints"] (a model that outputs NaN or Inf, e.g. FP16
        overflow, is flagged there rather than passed on). Returns self when everything is already finite."""
        person_ok = np.isfinite(self.boxes).all(1) & np.isfinite(self.scores)
        kp_ok = np.isfinite(self.keypoints).all(-1)
        if person_ok.all() and kp_ok.all():
            return self
        out = self.select(person_ok)
        kp_ok = kp_ok[person_ok]
        out.keypoints = np.where(kp_ok[..., None], out.keypoints, np.float32(0)).astype(np.float32)
        out.extra["non_finite_people"] = out.extra.get("non_finite_people", 0) + int((~person_ok).sum())
        out.extra["non_finite_keypoints"] = out.extra.get("non_finite_keypoints", 0) + int((~kp_ok).sum())
        return out

    def boxes_xywh(self) -> np.ndarray:
        """float64 [P, 4] (x, y, w, h), COCO's box convention."""
        b = self.boxes.astype(np.float64)
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO keypoint results (category 1, the person score as the result's score); none for a detector."""
        if self.num_keypoints == 0:
            return []
        from pose_edge.runtime.writers import coco_results

        return coco_results(image_id, self.keypoints, self.scores)

    def to_coco_boxes(self, image_id: int) -> list[dict]:
        """COCO detection results of the person boxes (x, y, w, h)."""
        return [{"image_id": int(image_id), "category_id": 1, "bbox": [round(float(v), 2) for v in box],
                 "score": round(float(s), 6)} for box, s in zip(self.boxes_xywh(), self.scores)]

    def to_dict(self) -> dict:
        """Plain JSON-ready values: {"keypoint_names": [...], "poses": [{"keypoints": [[x, y, conf] * K],
        "box": [x1, y1, x2, y2], "score", "track_id"}]} (what `pose-edge predict --json` writes per frame)."""
        from pose_edge.runtime.writers import pose_records

        names = list(NAMES) if self.num_keypoints == len(NAMES) else []
        return {"keypoint_names": names,
                "poses": pose_records(self.keypoints, self.boxes, self.scores, self.track_ids)}

    def draw(self, frame: np.ndarray, keypoint_threshold: float = 0.3) -> np.ndarray:
        """A copy of `frame` (uint8 BGR [H, W, 3]) with these poses drawn on it."""
        from pose_edge.runtime.draw import draw_poses

        return draw_poses(frame, self.keypoints, self.boxes, self.scores, self.track_ids,
                          keypoint_threshold=keypoint_threshold)
