"""The KAPAO decoder as it was before the fast path (issue 14), kept verbatim as the reference the tests compare
pose_edge.runtime.kapao_decode with: it decodes every row, then thresholds. Same contract (kapao_decode's docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pose_edge.geometry import Letterbox


@dataclass(frozen=True)
class Thresholds:
    """Post-processing settings; the defaults are the reference's COCO evaluation settings (val.py)."""

    conf_thres: float = 0.001  # person pass: obj and obj * cls must exceed it
    iou_thres: float = 0.65  # person pass NMS IoU
    conf_thres_kp: float = 0.2  # keypoint pass confidence
    iou_thres_kp: float = 0.25  # keypoint pass NMS IoU
    conf_thres_kp_person: float = 0.3  # only poses more confident than this receive keypoint objects
    overwrite_tol: float = 50.0  # original-image pixels
    max_det: int = 300  # per pass and image
    max_nms: int = 30000  # candidates entering each NMS
    use_kp_dets: bool = True  # fuse keypoint objects (False: poses keep their regressed keypoints, all conf 0)


COCO_THRESHOLDS = Thresholds()
# The reference's demo settings (demos/image.py), for drawing rather than AP.
DEMO_THRESHOLDS = Thresholds(conf_thres=0.7, iou_thres=0.45, conf_thres_kp=0.5, iou_thres_kp=0.45,
                             conf_thres_kp_person=0.2, overwrite_tol=25.0)


@dataclass
class PoseDetections:
    """One image's result. boxes [P, 4] xyxy, scores [P], keypoints [P, K, 3] (x, y, conf); image pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, num_keypoints: int) -> "PoseDetections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, num_keypoints, 3), np.float32))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float32; exp overflow for very negative x correctly gives 0."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def row_width(num_classes: int, num_keypoints: int) -> int:
    """D, the channels per anchor: box (4) + objectness (1) + classes + keypoint (x, y) pairs."""
    return 5 + num_classes + 2 * num_keypoints


def decode(outputs: Sequence[np.ndarray], strides: Sequence[int], anchors, num_classes: int,
           num_keypoints: int) -> np.ndarray:
    """Raw level grids -> decoded rows float32 [N, R, D] (layout and order in the module docstring)."""
    if len(outputs) != len(strides) or len(outputs) != len(anchors):
        raise ValueError(f"{len(outputs)} output grids for {len(strides)} strides and {len(anchors)} anchor levels")
    depth = row_width(num_classes, num_keypoints)
    rows = []
    for raw, stride, level_anchors in zip(outputs, strides, anchors):
        raw = np.asarray(raw)
        n, channels, height, width = raw.shape
        num_anchors = len(level_anchors)
        if channels != num_anchors * depth:
            raise ValueError(f"a level grid has {channels} channels; expected {num_anchors} anchors x {depth}")
        # [N, A, D, H, W] -> [N, A, H, W, D]: one row per (anchor, cell), channels last.
        y = sigmoid(raw.reshape(n, num_anchors, depth, height, width).transpose(0, 1, 3, 4, 2))
        anchor_wh = np.asarray(level_anchors, np.float32).reshape(1, num_anchors, 1, 1, 2)
        gy, gx = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
        grid = np.stack([gx, gy], axis=-1).reshape(1, 1, height, width, 2)  # (gx, gy) per cell
        s = np.float32(stride)
        out = np.empty_like(y)
        out[..., 0:2] = (np.float32(2.0) * y[..., 0:2] - np.float32(0.5) + grid) * s
        out[..., 2:4] = (np.float32(2.0) * y[..., 2:4]) ** 2 * anchor_wh
        out[..., 4:5 + num_classes] = y[..., 4:5 + num_classes]
        if num_keypoints:
            kp = y[..., 5 + num_classes:].reshape(n, num_anchors, height, width, num_keypoints, 2)
            kp = (np.float32(4.0) * kp - np.float32(2.0)) * anchor_wh[..., None, :] + grid[..., None, :] * s
            out[..., 5 + num_classes:] = kp.reshape(n, num_anchors, height, width, 2 * num_keypoints)
        rows.append(out.reshape(n, num_anchors * height * width, depth))
    return np.concatenate(rows, axis=1)


def boxes_xyxy(rows: np.ndarray) -> np.ndarray:
    """[..., >=4] rows (cx, cy, w, h, ...) -> float32 [..., 4] (x1, y1, x2, y2)."""
    rows = np.asarray(rows, np.float32)
    half = rows[..., 2:4] / np.float32(2.0)
    return np.concatenate([rows[..., 0:2] - half, rows[..., 0:2] + half], axis=-1)


def select_candidates(rows: np.ndarray, num_classes: int, conf_thres: float, classes: Sequence[int] | None = None,
                      max_nms: int = 30000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's decoded rows [R, D] -> (row index [M] int64, conf [M] float32, class [M] int64).

    Confidence filter, best class, class filter, then conf descending (stable) capped at max_nms; see the module
    docstring.
    """
    obj = rows[:, 4]
    index = np.flatnonzero(obj > conf_thres)
    conf_all = rows[index, 5:5 + num_classes] * rows[index, 4:5]  # float32 obj * cls_c
    best = np.argmax(conf_all, axis=1) if len(index) else np.zeros(0, np.int64)
    conf = conf_all[np.arange(len(index)), best]
    keep = conf > conf_thres
    if classes is not None:
        keep &= np.isin(best, np.asarray(list(classes), np.int64))
    index, conf, best = index[keep], conf[keep], best[keep]
    order = np.argsort(-conf, kind="stable")[:max_nms]
    return index[order].astype(np.int64), conf[order].astype(np.float32), best[order].astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
        max_keep: int | None = None) -> np.ndarray:
    """Class-aware greedy NMS; int64 indices of the kept boxes, score descending (= torchvision.ops.batched_nms).

    boxes [M, 4] xyxy (computed in float32), scores [M] finite, class_ids [M] ints. One iteration per kept box, each
    vectorised over the boxes still alive.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    if not (len(boxes) == len(scores) == len(class_ids)):
        raise ValueError(f"nms needs as many boxes ({len(boxes)}), scores ({len(scores)}) and classes "
                         f"({len(class_ids)})")
    max_keep = len(boxes) if max_keep is None else max_keep
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    alive = np.argsort(-scores, kind="stable")
    keep = []
    zero = np.float32(0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        while alive.size and len(keep) < max_keep:
            i, rest = alive[0], alive[1:]
            keep.append(i)
            w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            iou = inter / ((area[i] + area[rest]) - inter)
            suppressed = (iou.astype(np.float64) > float(iou_threshold)) & (class_ids[rest] == class_ids[i])
            alive = rest[~suppressed]
    return np.asarray(keep, dtype=np.int64)


def detect(rows: np.ndarray, num_classes: int, conf_thres: float, iou_thres: float,
           classes: Sequence[int] | None, max_det: int, max_nms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One NMS pass over one image's rows [R, D]: (row index [M], conf [M], class [M]) of the kept detections."""
    index, conf, cls = select_candidates(rows, num_classes, conf_thres, classes, max_nms)
    keep = nms(boxes_xyxy(rows[index]), conf, cls, iou_thres, max_keep=max_det)
    return index[keep], conf[keep], cls[keep]


def fuse_keypoints(pose_xy: np.ndarray, pose_scores: np.ndarray, kp_xy: np.ndarray, kp_conf: np.ndarray,
                   kp_type: np.ndarray, conf_thres_kp_person: float = 0.3,
                   overwrite_tol: float = 50.0) -> np.ndarray:
    """Fuse keypoint objects into poses (rule in the module docstring) -> keypoints float32 [P, K, 3].

    pose_xy [P, K, 2] and kp_xy [Q, 2] in one coordinate frame (the pipeline uses image pixels), pose_scores [P],
    kp_conf [Q] and kp_type [Q] (keypoint index 0..K-1), detections in processing order.
    """
    pose_xy = np.asarray(pose_xy, np.float32)
    num_poses, num_keypoints = pose_xy.shape[:2]
    fused = np.concatenate([pose_xy, np.zeros((num_poses, num_keypoints, 1), np.float32)], axis=-1)
    eligible = np.flatnonzero(np.asarray(pose_scores) > conf_thres_kp_person)
    kp_xy = np.asarray(kp_xy, np.float32).reshape(-1, 2)
    kp_conf = np.asarray(kp_conf, np.float32).reshape(-1)
    kp_type = np.asarray(kp_type, np.int64).reshape(-1)
    if not len(eligible) or not len(kp_conf):
        return fused
    # rank[q] = how many earlier detections share q's type: step t handles rank t of every type at once.
    by_type = np.argsort(kp_type, kind="stable")
    first_of_type = np.searchsorted(kp_type[by_type], kp_type[by_type], side="left")
    rank = np.empty(len(kp_type), np.int64)
    rank[by_type] = np.arange(len(kp_type)) - first_of_type
    tol2 = float(overwrite_tol) ** 2
    for step in range(int(rank.max()) + 1):
        q = np.flatnonzero(rank == step)  # at most one detection per keypoint type
        k = kp_type[q]
        current = fused[eligible[:, None], k[None, :]]  # [Pe, Q_t, 3]
        dx = current[..., 0] - kp_xy[q, 0]
        dy = current[..., 1] - kp_xy[q, 1]
        d2 = dx * dx + dy * dy
        nearest = np.argmin(d2, axis=0)  # first minimum: earliest eligible pose
        cols = np.arange(len(q))
        wins = (kp_conf[q] > current[nearest, cols, 2]) & (d2[nearest, cols].astype(np.float64) < tol2)
        poses = eligible[nearest[wins]]
        fused[poses, k[wins], 0:2] = kp_xy[q[wins]]
        fused[poses, k[wins], 2] = kp_conf[q[wins]]
    return fused


def postprocess_rows(rows: np.ndarray, num_classes: int, num_keypoints: int, letterbox: Letterbox | None = None,
                     thresholds: Thresholds = COCO_THRESHOLDS) -> PoseDetections:
    """One image's decoded rows [R, D] (input pixels) -> PoseDetections in image pixels.

    Person pass, keypoint pass (when num_keypoints > 0 and thresholds.use_kp_dets), undo the letterbox, fuse.
    """
    t = thresholds
    person_rows, person_conf, _ = detect(rows, num_classes, t.conf_thres, t.iou_thres, [0], t.max_det, t.max_nms)
    person = rows[person_rows]
    boxes = boxes_xyxy(person)
    pose_xy = person[:, 5 + num_classes:].reshape(len(person), num_keypoints, 2)
    if letterbox is not None:
        boxes = letterbox.to_image(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        pose_xy = letterbox.to_image(pose_xy)
    if num_keypoints and t.use_kp_dets and len(person):
        kp_rows, kp_conf, kp_cls = detect(rows, num_classes, t.conf_thres_kp, t.iou_thres_kp,
                                          range(1, 1 + num_keypoints), t.max_det, t.max_nms)
        kp_xy = rows[kp_rows, 0:2]
        if letterbox is not None:
            kp_xy = letterbox.to_image(kp_xy)
        keypoints = fuse_keypoints(pose_xy, person_conf, kp_xy, kp_conf, kp_cls - 1, t.conf_thres_kp_person,
                                   t.overwrite_tol)
    else:
        keypoints = np.concatenate([pose_xy, np.zeros((len(person), num_keypoints, 1), np.float32)], axis=-1)
    return PoseDetections(boxes.astype(np.float32), person_conf, keypoints.astype(np.float32))


def postprocess(outputs: Sequence[np.ndarray], strides: Sequence[int], anchors, num_classes: int, num_keypoints: int,
                letterboxes: Sequence[Letterbox | None] | None = None,
                thresholds: Thresholds = COCO_THRESHOLDS) -> list[PoseDetections]:
    """Raw level grids for N images -> N PoseDetections: decode, then `postprocess_rows` per image."""
    rows = decode(outputs, strides, anchors, num_classes, num_keypoints)
    letterboxes = [None] * len(rows) if letterboxes is None else list(letterboxes)
    if len(letterboxes) != len(rows):
        raise ValueError(f"{len(letterboxes)} letterboxes for {len(rows)} images")
    return [postprocess_rows(r, num_classes, num_keypoints, lb, thresholds) for r, lb in zip(rows, letterboxes)]
