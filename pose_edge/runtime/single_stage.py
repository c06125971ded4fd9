"""Single-stage pose estimation (KAPAO) and person detection: frames -> letterbox -> backend -> decode stage -> Poses.

Torch-free; any backend (ONNX Runtime, TensorRT, PyTorch) whose meta.family is "kapao" or "person_detector" (the
detector is the KAPAO network with one class and no keypoints, decoded by its person pass only).

The decode stage turns the network's raw grids into Poses in frame pixels (pose_edge.runtime.kapao_decode states
the contract): NumpyKapaoDecoder on the host, or the CUDA kernels (pose_edge.kernels.stages.GpuKapaoDecoder) on a
backend whose outputs stay on the GPU (`run_device`), so that only the final poses cross to the host.

Optional test-time augmentation (reference §A.6), host decoding only: extra scales s <= 1 (the letterboxed input
resized by s and padded right/bottom back to the input size, which engines with a fixed input size can run) and a
left-right flip (de-flipped: x -> W - x, left/right keypoint classes and keypoint pairs swapped). The decoded rows of
all augmentations are concatenated before the NMS, as the reference does (no averaging).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import PAD_VALUE, letterbox
from pose_edge.keypoints import FLIP_PERM
from pose_edge.runtime import kapao_decode
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import COCO_THRESHOLDS, Thresholds
from pose_edge.runtime.timing import StageTimer

FAMILIES = ("kapao", "person_detector")


class NumpyKapaoDecoder:
    """The host decode stage: raw grids (host arrays) -> Poses per image, by kapao_decode.postprocess."""

    on_device = False
    name = "numpy"

    def __init__(self, meta, thresholds: Thresholds = COCO_THRESHOLDS):
        self.meta, self.thresholds = meta, thresholds

    def __call__(self, outputs: Sequence[np.ndarray], letterboxes) -> list[Poses]:
        m = self.meta
        return kapao_decode.postprocess(outputs, m.strides, m.anchors, m.num_classes, m.num_keypoints, letterboxes,
                                        self.thresholds)


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


class SingleStagePipeline:
    """pipeline(frames) -> one Poses per frame (frame pixels; K = 0 for a person detector).

    backend: meta.family in FAMILIES, run(uint8 [N, H, W, 3] BGR) -> raw grids (and, for GPU decoding,
    run_device(...) -> [(pointer, shape, dtype)] per level). thresholds: the NMS and fusion settings.
    decoder: the decode stage (default NumpyKapaoDecoder). scales, flip: test-time augmentation (host decoding).
    """

    def __init__(self, backend, thresholds: Thresholds = COCO_THRESHOLDS, decoder=None,
                 scales: Sequence[float] = (1.0,), flip: bool = False, timer: StageTimer | None = None):
        meta = backend.meta
        if meta.family not in FAMILIES:
            raise PoseEdgeError(f"{meta.preset} is a {meta.family} model; the single-stage pipeline runs KAPAO "
                                "models and person detectors")
        self.backend, self.meta = backend, meta
        if meta.family == "person_detector" and thresholds.use_kp_dets:
            thresholds = Thresholds(**{**thresholds.__dict__, "use_kp_dets": False})
        self.thresholds = thresholds
        self.decoder = decoder or NumpyKapaoDecoder(meta, thresholds)
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        if not self.scales or any(not 0 < s <= 1 for s in self.scales):
            raise PoseEdgeError(f"TTA scales must lie in (0, 1] (the input size is fixed), got {scales}")
        if self.decoder.on_device and (self.flip or self.scales != (1.0,)):
            raise PoseEdgeError("test-time augmentation combines decoded rows on the host; use the NumPy decoder "
                                "(decode='numpy') with flip or scales")
        self.input_size = (meta.input.height, meta.input.width)
        self.timer = timer or StageTimer()

    @property
    def tta(self) -> bool:
        return self.flip or self.scales != (1.0,)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        """Poses per frame, every value finite (non-finite ones dropped and counted: Poses.finite)."""
        return [p.finite() for p in self._run(frames)]

    def _run(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        if not len(frames):
            return []
        with self.timer("preprocess"):
            placed = [letterbox(f, self.input_size) for f in frames]
            batch = np.stack([canvas for canvas, _ in placed])
            boxes = [box for _, box in placed]
        if self.tta:
            return self._with_tta(batch, boxes)
        if self.decoder.on_device and hasattr(self.backend, "run_device"):
            with self.timer("inference"):
                outputs = self.backend.run_device(batch)
            with self.timer("postprocess"):
                return self.decoder.decode_device(outputs, boxes)
        with self.timer("inference"):
            outputs = self.backend.run(batch)
        with self.timer("postprocess"):
            return self.decoder(outputs, boxes)

    def _candidate_rows(self, batch: np.ndarray) -> list[np.ndarray]:
        """One pass of the backend -> per image, its candidate rows [M, D] in letterboxed-input pixels (only the rows
        that can survive the thresholds are decoded; kapao_decode.decode_candidates)."""
        with self.timer("inference"):
            outputs = self.backend.run(batch)
        with self.timer("postprocess"):
            m = self.meta
            return [rows for rows, _ in kapao_decode.decode_candidates(outputs, m.strides, m.anchors, m.num_classes,
                                                                       m.num_keypoints, self.thresholds)]

    def _with_tta(self, batch: np.ndarray, boxes) -> list[Poses]:
        """Candidate rows of every augmentation, in letterboxed-input pixels, concatenated per image (pass after pass:
        each scale, then its flip when the scale is 1) before one NMS, as the reference concatenates all rows."""
        m = self.meta
        nc, k = m.num_classes, m.num_keypoints
        per_image = [[] for _ in range(len(batch))]
        width = batch.shape[2]
        for scale in self.scales:
            scaled = batch if scale == 1.0 else rescale_input(batch, scale)
            passes = [(self._candidate_rows(scaled), False)]
            if self.flip and scale == 1.0:
                passes.append((self._candidate_rows(np.ascontiguousarray(batch[:, :, ::-1])), True))
            for pass_rows, flipped in passes:
                for image_rows, rows in zip(per_image, pass_rows):
                    if scale != 1.0:  # the resize rounds to whole pixels: undo it per axis
                        factor = np.array([round(batch.shape[2] * scale) / batch.shape[2],
                                           round(batch.shape[1] * scale) / batch.shape[1]], np.float32)
                        rows = rows.copy()
                        rows[:, 0:2] /= factor
                        rows[:, 2:4] /= factor
                        kp = rows[:, 5 + nc:].reshape(len(rows), k, 2)
                        rows[:, 5 + nc:] = (kp / factor).reshape(len(rows), 2 * k)
                    image_rows.append(deflip_rows(rows, width, nc, k) if flipped else rows)
        with self.timer("postprocess"):
            return [kapao_decode.postprocess_rows(np.concatenate(rows), nc, k, box, self.thresholds)
                    for rows, box in zip(per_image, boxes)]
