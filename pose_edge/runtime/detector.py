"""The person detector that feeds the top-down pipeline its boxes. Torch-free.

The detector is the KAPAO network configured with one class and no keypoints (family "person_detector"), so it trains,
exports and builds engines exactly like the pose models and is decoded by the same NumPy decode + NMS
(pose_edge.runtime.kapao_decode, person pass only).

    detector = PersonDetector(backend)
    boxes, scores = detector(image)     # boxes float32 [P, 4] (x, y, w, h) image pixels, scores float32 [P]

A PersonDetector is a box source for pose_edge.runtime.topdown: any callable image -> (boxes xywh, scores).
"""

from __future__ import annotations

import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.runtime.kapao_decode import Thresholds
from pose_edge.runtime.kapao_pipeline import KapaoPipeline

# Box-source defaults: boxes a top-down model will crop. The COCO box evaluation uses conf 0.001 (keep everything);
# a top-down model runs once per box, so the run-time default keeps fewer.
DETECTOR_THRESHOLDS = Thresholds(conf_thres=0.05, iou_thres=0.6, max_det=100, use_kp_dets=False)


class PersonDetector:
    """image uint8 [H, W, 3] BGR -> (boxes float32 [P, 4] xywh top-left in image pixels, scores float32 [P]).

    Boxes are clipped to the image and sorted by score, highest first. backend.meta.family must be
    "person_detector" (a KAPAO model's pose boxes would also work, but that is the single-stage pipeline's job).
    """

    def __init__(self, backend, conf_thres: float = DETECTOR_THRESHOLDS.conf_thres,
                 iou_thres: float = DETECTOR_THRESHOLDS.iou_thres, max_det: int = DETECTOR_THRESHOLDS.max_det,
                 flip: bool = False):
        if backend.meta.family != "person_detector":
            raise PoseEdgeError(f"{backend.meta.preset} is a {backend.meta.family} model, not a person detector "
                                "(train one with `pose-edge train det-s`)")
        thresholds = Thresholds(conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det, use_kp_dets=False)
        self.pipeline = KapaoPipeline(backend, thresholds, flip=flip)
        self.meta = backend.meta

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several images at once (one backend batch): a (boxes, scores) pair per image."""
        out = []
        for image, det in zip(images, self.pipeline(images)):
            h, w = image.shape[:2]
            xyxy = det.boxes.copy()
            xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
            xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
            boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).astype(np.float32)
            keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
            out.append((boxes[keep], det.scores[keep].astype(np.float32)))
        return out

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.detect([image])[0]
