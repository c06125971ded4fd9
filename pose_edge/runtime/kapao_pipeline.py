"""Single-stage pose estimation with a KAPAO backend: image -> letterbox -> backend -> decode + NMS + fusion -> poses.

Torch-free: any backend (PyTorch checkpoint, ONNX Runtime, TensorRT) with meta.family "kapao" or "person_detector".
Optional test-time augmentation (reference §A.6): extra scales s <= 1 (the letterboxed input resized by s and padded
right/bottom back to the input size, which engines with a fixed input size can run; the reference pads only to a
multiple of 64, and its scales above 1 need a larger input than a fixed-size engine has) and a left-right flip
(de-flipped: x -> W - x, left/right keypoint classes and keypoint pairs swapped). The decoded rows of all
augmentations are concatenated before the NMS, as the reference does (no averaging).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import PAD_VALUE, letterbox
from pose_edge.keypoints import FLIP_PERM
from pose_edge.runtime import kapao_decode
from pose_edge.runtime.kapao_decode import COCO_THRESHOLDS, PoseDetections, Thresholds

FAMILIES = ("kapao", "person_detector")


def deflip_rows(rows: np.ndarray, width: int, num_classes: int, num_keypoints: int) -> np.ndarray:
    """Decoded rows [..., D] of a left-right flipped input (width px) -> rows of the unflipped input."""
    rows = rows.copy()
    rows[..., 0] = width - rows[..., 0]
    if num_keypoints:
        perm = np.asarray(FLIP_PERM)
        kp_cls = slice(6, 6 + num_keypoints)  # class 1 + k of keypoint k
        rows[..., kp_cls] = rows[..., kp_cls][..., perm]
        kp = rows[..., 5 + num_classes:].reshape(*rows.shape[:-1], num_keypoints, 2)
        kp[..., 0] = width - kp[..., 0]
        rows[..., 5 + num_classes:] = kp[..., perm, :].reshape(*rows.shape[:-1], 2 * num_keypoints)
    return rows


def rescale_input(batch: np.ndarray, scale: float) -> np.ndarray:
    """uint8 [N, H, W, 3] -> resized by `scale` <= 1 (bilinear) at the top-left, padded (114) back to H x W."""
    n, h, w, _ = batch.shape
    new_h, new_w = round(h * scale), round(w * scale)
    out = np.full((n, h, w, 3), PAD_VALUE, np.uint8)
    for i in range(n):
        out[i, :new_h, :new_w] = cv2.resize(batch[i], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out


class KapaoPipeline:
    """pipeline(images) -> list of PoseDetections (image pixels), one per image.

    backend: has `meta` (ModelMeta of family kapao or person_detector) and run(uint8 [N, H, W, 3] BGR) -> raw grids.
    thresholds: NMS and fusion settings (COCO evaluation defaults). scales, flip: test-time augmentation.
    """

    def __init__(self, backend, thresholds: Thresholds = COCO_THRESHOLDS, scales: Sequence[float] = (1.0,),
                 flip: bool = False):
        meta = backend.meta
        if meta.family not in FAMILIES:
            raise PoseEdgeError(f"{meta.preset} is a {meta.family} model; this pipeline runs KAPAO-style models")
        self.backend = backend
        self.meta = meta
        self.thresholds = thresholds
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        if not self.scales or any(not 0 < s <= 1 for s in self.scales):
            raise PoseEdgeError(f"TTA scales must lie in (0, 1] (the input size is fixed), got {scales}")
        self.input_size = (meta.input.height, meta.input.width)
        self.num_classes = meta.num_classes
        self.num_keypoints = meta.num_keypoints

    def _decode(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.backend.run(batch)
        m = self.meta
        return kapao_decode.decode(outputs, m.strides, m.anchors, m.num_classes, m.num_keypoints)

    def rows(self, batch: np.ndarray) -> np.ndarray:
        """Letterboxed uint8 batch [N, H, W, 3] -> decoded rows [N, R, D] in letterboxed-input pixels, all
        augmentations concatenated along R."""
        parts = []
        width = batch.shape[2]
        for scale in self.scales:
            scaled = batch if scale == 1.0 else rescale_input(batch, scale)
            rows = self._decode(scaled)
            if scale != 1.0:  # the resize rounds to whole pixels: undo it per axis
                factor = np.array([round(batch.shape[2] * scale) / batch.shape[2],
                                   round(batch.shape[1] * scale) / batch.shape[1]], np.float32)
                rows[..., 0:2] /= factor
                rows[..., 2:4] /= factor
                kp = rows[..., 5 + self.num_classes:].reshape(*rows.shape[:-1], self.num_keypoints, 2)
                rows[..., 5 + self.num_classes:] = (kp / factor).reshape(*rows.shape[:-1], 2 * self.num_keypoints)
            parts.append(rows)
            if self.flip and scale == 1.0:
                flipped = self._decode(np.ascontiguousarray(batch[:, :, ::-1]))
                parts.append(deflip_rows(flipped, width, self.num_classes, self.num_keypoints))
        return np.concatenate(parts, axis=1)

    def __call__(self, images: Iterable[np.ndarray]) -> list[PoseDetections]:
        canvases, boxes = [], []
        for image in images:
            canvas, box = letterbox(image, self.input_size)
            canvases.append(canvas)
            boxes.append(box)
        if not canvases:
            return []
        rows = self.rows(np.stack(canvases))
        return [kapao_decode.postprocess_rows(r, self.num_classes, self.num_keypoints, box, self.thresholds)
                for r, box in zip(rows, boxes)]

    def predict(self, image: np.ndarray) -> PoseDetections:
        return self([image])[0]


def predict_dataset(pipeline: KapaoPipeline, data, progress=None, batch_size: int = 8,
                    image_ids: Sequence[int] | None = None) -> tuple[list[dict], list[dict]]:
    """COCO results of every image of `data` (anything with image_ids and load_image(image_id), e.g. a CocoKeypoints
    split): (keypoint results, person-box results; both empty lists where nothing was found). progress(done, total)
    is called after each batch. A person detector's pipeline gives box results only."""
    from pose_edge.evaluate.scoring import box_results_from_arrays, results_from_arrays

    image_ids = list(data.image_ids if image_ids is None else image_ids)
    keypoint_results, box_results = [], []
    for start in range(0, len(image_ids), batch_size):
        ids = image_ids[start:start + batch_size]
        for image_id, det in zip(ids, pipeline([data.load_image(i) for i in ids])):
            xywh = np.concatenate([det.boxes[:, :2], det.boxes[:, 2:] - det.boxes[:, :2]], axis=1)
            box_results += box_results_from_arrays([image_id] * len(det), xywh, det.scores)
            if pipeline.num_keypoints:
                keypoint_results += results_from_arrays([image_id] * len(det), det.keypoints, det.scores)
        if progress:
            progress(min(start + batch_size, len(image_ids)), len(image_ids))
    return keypoint_results, box_results
