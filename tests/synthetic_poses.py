"""Hand-made poses and clips for the runtime I/O tests: a standing person facing the camera, a short video."""

from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np

# x, y of the 17 COCO keypoints of a person facing the camera, in a unit box (the person's left is the image right).
UNIT_PERSON = np.array([
    [.50, .08], [.54, .05], [.46, .05], [.60, .07], [.40, .07], [.68, .22], [.32, .22], [.75, .40], [.25, .40],
    [.78, .56], [.22, .56], [.62, .55], [.38, .55], [.63, .76], [.37, .76], [.64, .97], [.36, .97]])


def standing_person(x: float, y: float, w: float, h: float, confidence=0.9) -> np.ndarray:
    """float32 [17, 3] keypoints of a person in the box (x, y, w, h); confidence a scalar or [17]."""
    k = np.zeros((17, 3), np.float32)
    k[:, 0] = x + UNIT_PERSON[:, 0] * w
    k[:, 1] = y + UNIT_PERSON[:, 1] * h
    k[:, 2] = confidence
    return k


def poses_of(keypoints, scores=None, track_ids=None):
    """An object with the attributes of pose_edge's result type (keypoints [P,17,3], boxes [P,4] xyxy from the
    keypoints, scores [P], track_ids [P] | None)."""
    keypoints = np.asarray(keypoints, np.float32).reshape(-1, 17, 3)
    boxes = np.concatenate([keypoints[:, :, :2].min(1), keypoints[:, :, :2].max(1)], axis=1)
    scores = np.full(len(keypoints), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return types.SimpleNamespace(keypoints=keypoints, boxes=boxes, scores=scores, track_ids=track_ids)


def write_clip(path: Path, frames: int, size=(96, 64), fps: float = 25.0) -> Path:
    """An .mp4 whose frame t is a flat grey of brightness 12 * t (frames <= 21), so frame order can be read back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for t in range(frames):
        writer.write(np.full((size[1], size[0], 3), 12 * t, np.uint8))
    writer.release()
    return path
