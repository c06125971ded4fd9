"""The top-down pipeline, torch-free: person boxes -> affine crops -> pose backend -> heatmaps -> poses in the image.

    pipeline = TopDownPipeline(backend)                         # backend.meta.family == "simple_baseline"
    poses = pipeline(image, boxes, box_scores)                  # image uint8 [H, W, 3] BGR; boxes [P, 4] xywh

Geometry (every coordinate in pixels with the centre of the top-left pixel at (0, 0), cv2.warpAffine's convention):
  box -> centre and size  centre (x + w/2, y + h/2) of a COCO box [x, y, w, h]; the shorter side grown so that
                          w / h equals the input's aspect ratio; both sides times `padding` (1.25). In the reference's
                          units scale = size / pixel_std (200): nothing here needs that unit, so sizes stay in pixels.
  image -> input          the centre goes to ((W_in - 1)/2, (H_in - 1)/2) and `size` to the input's full extent:
                          x_in = k * R(rot) (x_img - c) + (W_in - 1)/2, k = W_in / size_w (rot 0 at inference).
  input -> heatmap        x_in = 4 * x_hm + 1.5 (pose_edge.runtime.heatmap_codec), so heatmap -> image is
                          inverse(image -> input) composed with it, one [2, 3] matrix per crop, applied by the decoder.
  flip test               the crops flipped left-right run with the originals in one batch; their heatmaps are flipped
                          back (reversed along W, left/right channels swapped) and averaged with the originals. With
                          the convention above the flip is exact, so no shift (shift=True reproduces the reference's
                          one-column shift, which compensates its x_hm = x_in / 4 convention).
Scoring (reference §B.6): keypoint score = peak of the (averaged) heatmap; instance score = box score x mean of the
keypoint scores above 0.2 (0 if none); greedy OKS-NMS per image at OKS 0.9, the OKS computed with the padded box
areas and all 17 keypoints.

Boxes come from a box source: `GroundTruthBoxes`, `DetectionBoxes` (a COCO detections JSON), or any callable
image -> (boxes float [P, 4] xywh, scores float [P]) such as pose_edge.runtime.detector.PersonDetector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pose_edge.errors import DataError, PoseEdgeError
from pose_edge.geometry import BOX_PADDING, box_to_center_size, crop_affine, invert_affine, warp_crops
from pose_edge.heatmap_codec import GaussianHeatmapCodec
from pose_edge.keypoints import FLIP_PERM, OKS_SIGMAS
from pose_edge.runtime.heatmap_decode import REFINE_MODES, decode_heatmaps

KEYPOINT_SCORE_THRESHOLD = 0.2  # IN_VIS_THRE
OKS_NMS_THRESHOLD = 0.9


# ------------------------------------------------------------------------------------------------------- geometry


def flip_back(heatmaps: np.ndarray, flip_perm=FLIP_PERM, shift: bool = False) -> np.ndarray:
    """Heatmaps [N, K, h, w] of left-right flipped crops -> heatmaps of the original crops.

    Reverses the W axis and swaps left/right channels. shift=True also moves the result one column to the right
    (column 0 keeps its value), the reference's correction for its x_hm = x_in / 4 convention; not needed here.
    """
    out = heatmaps[:, list(flip_perm), :, ::-1]
    if shift:
        out = out.copy()
        out[..., 1:] = out[..., :-1].copy()
    return np.ascontiguousarray(out)


# -------------------------------------------------------------------------------------------------------- scoring


def rescore(keypoints: np.ndarray, box_scores: np.ndarray, threshold: float = KEYPOINT_SCORE_THRESHOLD
            ) -> np.ndarray:
    """Instance scores [P]: box score x mean of the keypoint scores above `threshold` (0 if none is)."""
    s = keypoints[..., 2].astype(np.float64)
    above = s > threshold
    mean = np.where(above.any(1), (s * above).sum(1) / np.maximum(above.sum(1), 1), 0.0)
    return np.asarray(box_scores, np.float64) * mean


def oks_matrix(keypoints: np.ndarray, areas: np.ndarray, sigmas=OKS_SIGMAS) -> np.ndarray:
    """OKS [P, P] between every pair of predictions, the reference's oks_iou: all K keypoints, e = d^2 / (2 sigma)^2
    / (mean of the two areas) / 2."""
    xy = keypoints[..., :2].astype(np.float64)
    d2 = ((xy[:, None] - xy[None]) ** 2).sum(-1)  # [P, P, K]
    mean_area = (areas[:, None] + areas[None]) / 2 + np.spacing(1)
    e = d2 / ((2 * np.asarray(sigmas)) ** 2) / mean_area[..., None] / 2
    return np.exp(-e).mean(-1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = OKS_NMS_THRESHOLD
            ) -> np.ndarray:
    """Greedy OKS-NMS: indices kept, in descending score (ties by index); a candidate is dropped when its OKS with
    an already kept pose is > threshold."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if len(order) == 0:
        return order
    oks = oks_matrix(keypoints, np.asarray(areas, np.float64))
    kept, suppressed = [], np.zeros(len(order), bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= oks[i] > threshold
    return np.asarray(kept, np.int64)


# -------------------------------------------------------------------------------------------------------- sources


class GroundTruthBoxes:
    """The non-crowd person boxes of the annotations (score 1), for `boxes_for(image_id, image)`."""

    def __init__(self, coco, min_keypoints: int = 0):
        self.coco = coco
        self.min_keypoints = min_keypoints

    def boxes_for(self, image_id: int, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)
                and a.get("category_id", 1) == 1 and a.get("num_keypoints", 1) >= self.min_keypoints]
        boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        return _clean_boxes(boxes, np.ones(len(boxes)), image)


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
                raise DataError(f"{path}: malformed detection record {str(r)[:100]}") from None

    def boxes_for(self, image_id: int, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        dets = self.by_image.get(image_id, [])
        boxes = np.array([d[0] for d in dets], np.float64).reshape(-1, 4)
        return _clean_boxes(boxes, np.array([d[1] for d in dets], np.float64), image)


def _clean_boxes(boxes: np.ndarray, scores: np.ndarray, image: np.ndarray | None):
    """Drop empty or non-finite boxes, then clip the rest to the image (as the reference sanitises boxes)."""
    keep = np.isfinite(boxes).all(1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & np.isfinite(scores)
    boxes, scores = boxes[keep], scores[keep]
    if image is not None and len(boxes):
        h, w = image.shape[:2]
        x1, y1 = np.clip(boxes[:, 0], 0, w - 1), np.clip(boxes[:, 1], 0, h - 1)
        x2 = np.clip(boxes[:, 0] + np.maximum(boxes[:, 2] - 1, 0), 0, w - 1)
        y2 = np.clip(boxes[:, 1] + np.maximum(boxes[:, 3] - 1, 0), 0, h - 1)
        boxes = np.stack([x1, y1, x2 - x1 + 1, y2 - y1 + 1], 1)
    return boxes, scores


def source_for(boxes, coco=None):
    """A box source from what a user names: "gt" (needs the pycocotools COCO of the split), a detections .json path,
    or a box source / callable, returned as it is."""
    if isinstance(boxes, str) and boxes == "gt":
        if coco is None:
            raise PoseEdgeError("ground-truth boxes need the annotations of the split")
        return GroundTruthBoxes(coco)
    if isinstance(boxes, (str, Path)):
        if not str(boxes).endswith(".json"):
            raise PoseEdgeError(f"boxes {str(boxes)!r}: expected `gt` or a COCO detections .json")
        return DetectionBoxes(boxes)
    if hasattr(boxes, "boxes_for") or callable(boxes):
        return boxes
    raise PoseEdgeError(f"not a box source: {boxes!r}")


def boxes_from_source(source, image_id, image) -> tuple[np.ndarray, np.ndarray]:
    """Ask a box source for boxes: sources of this module by image id, any other callable with the image."""
    if hasattr(source, "boxes_for"):
        return source.boxes_for(image_id, image)
    boxes, scores = source(image)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64).reshape(-1)


# ------------------------------------------------------------------------------------------------------- pipeline


@dataclass
class Poses:
    """keypoints float32 [P, K, 3] (x, y, score) image pixels; scores float32 [P]; boxes float32 [P, 4] xywh."""

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


class TopDownPipeline:
    """Poses of the people in one image, given their boxes. See the module docstring for every step."""

    def __init__(self, backend, flip: bool = False, refine: str = "dark", flip_shift: bool = False,
                 padding: float = BOX_PADDING, nms_threshold: float | None = OKS_NMS_THRESHOLD,
                 keypoint_threshold: float = KEYPOINT_SCORE_THRESHOLD, max_batch: int = 64):
        meta = backend.meta
        if meta.family != "simple_baseline":
            raise PoseEdgeError(f"{meta.preset} is a {meta.family} model; the top-down pipeline needs a heatmap "
                                "model (simple_baseline)")
        if refine not in REFINE_MODES:
            raise PoseEdgeError(f"unknown refine {refine!r}; expected one of {', '.join(REFINE_MODES)}")
        self.backend, self.meta = backend, meta
        self.input_size = (meta.input.height, meta.input.width)
        self.codec = GaussianHeatmapCodec(self.input_size, meta.heatmap_stride or 4, meta.extra.get("sigma", 2.0))
        if meta.extra.get("dark_kernel"):
            self.codec.dark_kernel = int(meta.extra["dark_kernel"])
        self.flip, self.refine, self.flip_shift = flip, refine, flip_shift
        self.padding, self.nms_threshold, self.keypoint_threshold = padding, nms_threshold, keypoint_threshold
        self.max_batch = max_batch

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops [P, H_in, W_in, 3] -> float32 heatmaps [P, K, h, w], flip-averaged when flip is on.
        Crops (and their mirror images) go to the backend as one batch, split only above max_batch."""
        batch = np.concatenate([crops, crops[:, :, ::-1]]) if self.flip else crops
        outs = [self.backend.run(np.ascontiguousarray(batch[i:i + self.max_batch]))[0]
                for i in range(0, len(batch), self.max_batch)]
        hm = np.concatenate(outs).astype(np.float32, copy=False)
        if hm.ndim != 4 or hm.shape[0] != len(batch):
            raise PoseEdgeError(f"the pose model returned {hm.shape}, expected heatmaps [{len(batch)}, K, h, w]")
        if self.flip:
            p = len(crops)
            hm = (hm[:p] + flip_back(hm[p:], shift=self.flip_shift)) / 2
        return hm

    def __call__(self, image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray | None = None) -> Poses:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise PoseEdgeError(f"expected a uint8 BGR image [H, W, 3], got "
                                f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
        if image.size == 0:
            raise PoseEdgeError("the image is empty")
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        box_scores = np.ones(len(boxes)) if box_scores is None else np.asarray(box_scores, np.float64).reshape(-1)
        k = self.meta.num_keypoints
        if len(boxes) == 0:
            return Poses(np.zeros((0, k, 3), np.float32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
        h_in, w_in = self.input_size
        center, size = box_to_center_size(boxes, w_in / h_in, self.padding)
        to_input = crop_affine(center, size, self.input_size)
        crops = warp_crops(image, to_input, self.input_size)
        keypoints = decode_heatmaps(self.heatmaps(crops), self.codec.heatmap_to_image(invert_affine(to_input)), self.refine,
                                    self.codec.dark_kernel)
        scores = rescore(keypoints, box_scores, self.keypoint_threshold)
        keep = np.arange(len(boxes))
        if self.nms_threshold is not None:
            keep = oks_nms(keypoints, scores, size[:, 0] * size[:, 1], self.nms_threshold)
        return Poses(keypoints[keep], scores[keep].astype(np.float32), boxes[keep].astype(np.float32))


def predict_dataset(pipeline: TopDownPipeline, data, box_source, progress=None, image_ids=None) -> list[dict]:
    """COCO keypoint results for every image of `data` (anything with image_ids and load_image(image_id), e.g.
    pose_edge.data.coco.CocoKeypoints), or only for `image_ids`. progress: optional callable(done, total)."""
    image_ids = data.image_ids if image_ids is None else image_ids
    results = []
    for n, image_id in enumerate(image_ids):
        image = data.load_image(image_id)
        boxes, scores = boxes_from_source(box_source, image_id, image)
        poses = pipeline(image, boxes, scores)
        for kp, score in zip(poses.keypoints, poses.scores):
            results.append({"image_id": int(image_id), "category_id": 1,
                            "keypoints": [round(float(v), 3) for v in kp.reshape(-1)], "score": float(score)})
        if progress is not None:
            progress(n + 1, len(image_ids))
    return results
