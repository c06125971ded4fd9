"""KAPAO training labels: people become pose objects and keypoint objects, and the objects turn back into people.

One row per object, float32 [T, 5 + 3K], in input (canvas) pixels:
    [0]        class: 0 = pose object (a person), 1 + k = keypoint object of keypoint k
    [1:5]      box cx, cy, w, h
    [5:5+3K]   pose objects: K x (x, y, v) keypoints with COCO visibility v (0 = not labelled);
               keypoint objects: zeros (they carry no keypoints, as in the reference)
A pose object is written for every person given, also one without labelled keypoints (its keypoint loss is zero).
A keypoint object is a square of side kp_bbox * the longest canvas side centred on each labelled keypoint (v > 0)
that lies inside the canvas (reference §A.3: 0.05 x 1280 = 64 px at 1280 input).
With num_keypoints = 0 (the person detector) only pose objects are written and rows are [T, 5].
"""

from __future__ import annotations

import numpy as np

from pose_edge.keypoints import NUM_KEYPOINTS


class KapaoLabels:
    """Encode people (boxes + keypoints) into KAPAO object rows and decode rows back into people."""

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, kp_bbox: float = 0.05):
        self.num_keypoints = num_keypoints
        self.kp_bbox = kp_bbox

    @property
    def row_width(self) -> int:
        return 5 + 3 * self.num_keypoints

    def encode(self, boxes: np.ndarray, keypoints: np.ndarray, canvas_size: tuple[int, int],
               pose_mask: np.ndarray | None = None) -> np.ndarray:
        """boxes [P, 4] (x, y, w, h) top-left corner boxes as COCO writes them, keypoints [P, K, 3] (x, y, v), both in
        canvas pixels; canvas_size (h, w) -> rows float32 [T, 5 + 3K], pose objects first, in the order given.

        pose_mask [P] bool (default all): people that get a pose object. Keypoint objects come from every person's
        labelled keypoints inside the canvas, also from a person whose box augmentation cut away.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        keypoints = np.asarray(keypoints, np.float32).reshape(len(boxes), self.num_keypoints, 3)
        poses = np.zeros((len(boxes), self.row_width), np.float32)
        poses[:, 1:3] = boxes[:, 0:2] + boxes[:, 2:4] / 2
        poses[:, 3:5] = boxes[:, 2:4]
        poses[:, 5:] = keypoints.reshape(len(boxes), 3 * self.num_keypoints)
        if pose_mask is not None:
            poses = poses[np.asarray(pose_mask, bool)]
        if not self.num_keypoints:
            return poses
        height, width = canvas_size
        x, y, v = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2]
        labelled = (v > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        person, k = np.nonzero(labelled)
        kp_objects = np.zeros((len(person), self.row_width), np.float32)
        kp_objects[:, 0] = 1 + k
        kp_objects[:, 1] = x[person, k]
        kp_objects[:, 2] = y[person, k]
        kp_objects[:, 3:5] = self.kp_bbox * max(height, width)
        return np.concatenate([poses, kp_objects])

    def decode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rows [T, 5 + 3K] -> (boxes [P, 4] xywh top-left, keypoints [P, K, 3], keypoint objects [Q, 3] (x, y, k)).

        The people come from the pose objects; keypoint objects are returned as (centre x, centre y, keypoint index).
        """
        rows = np.asarray(rows, np.float32).reshape(-1, self.row_width)
        poses = rows[rows[:, 0] == 0]
        boxes = np.concatenate([poses[:, 1:3] - poses[:, 3:5] / 2, poses[:, 3:5]], axis=1)
        keypoints = poses[:, 5:].reshape(len(poses), self.num_keypoints, 3)
        kp_rows = rows[rows[:, 0] > 0]
        kp_objects = np.stack([kp_rows[:, 1], kp_rows[:, 2], kp_rows[:, 0] - 1], axis=1)
        return boxes, keypoints, kp_objects
