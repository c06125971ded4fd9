"""Single-stage pose estimation (KAPAO) and person detection: frames -> letterbox -> backend -> decode stage -> Poses.

Torch-free; any backend (ONNX Runtime, TensorRT, PyTorch) whose meta.family is "kapao" or "person_detector" (the
detector is the KAPAO network with one class and no keypoints, decoded by its person pass only).

The decode stage turns the network's raw grids into Poses in frame pixels (pose_edge.runtime.kapao_decode states
the contract): NumpyKapaoDecoder on the host, or the CUDA kernels (pose_edge.kernels.stages.GpuKapaoDecoder) on a
backend whose outputs stay on the GPU (`run_device`), so that only the final poses cross to the host.

Options (pose_edge.runtime.settings.Settings; its PAPER and PAPER_TTA profiles are KAPAO's published evaluation):
  test-time augmentation (reference §A.6): passes of (scale, mirrored) over the letterboxed input, each resized by
      its scale (bilinear), padded right/bottom (114) and decoded; mirrored passes are de-flipped (x -> W - x,
      left/right keypoint classes and keypoint pairs swapped) and every pass's rows are rescaled to the letterboxed
      input before all of them meet in one NMS, as the reference does (no averaging). On a backend that takes other
      sizes (takes_other_sizes: the ONNX export in ONNX Runtime) a scaled input is padded to the next multiple of
      the largest stride, as the reference's scale_img does (so 1.2 at 1280 runs at 1536); on a fixed-size backend
      it is padded back to the input size, so only scales <= 1 run there.
  rect: the rectangular letterbox (pose_edge.geometry.rect_input_size), images of one shape batched together; needs
      a backend that takes other sizes.
  clip: the reference's clipping to the image, after decoding and before fusion (postprocess_clipped).
Augmentation and clipping combine rows on the host, so they run with host decoding only.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import PAD_VALUE, Letterbox, letterbox, rect_input_size
from pose_edge.keypoints import FLIP_PERM
from pose_edge.runtime import kapao_decode
from pose_edge.runtime.backend import takes_other_sizes
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import COCO_THRESHOLDS, Settings, Thresholds
from pose_edge.runtime.timing import StageTimer

FAMILIES = ("kapao", "person_detector")
PLAIN = ((1.0, False),)  # one pass, unscaled and unmirrored: no augmentation


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


def tta_passes(scales: Sequence[float] = (1.0,), flip: bool = False,
               scale_flips: Sequence[bool] | None = None) -> tuple[tuple[float, bool], ...]:
    """The (scale, mirrored) passes of test-time augmentation, in the order their rows are concatenated.

    scale_flips None: one unmirrored pass per scale, and with `flip` a mirrored pass right after scale 1 (if it is
    among the scales). Otherwise one pass per scale, mirrored where scale_flips says (val.py's --scales / --flips).
    """
    scales = tuple(float(v) for v in scales)
    if not scales or any(not (math.isfinite(v) and v > 0) for v in scales):
        raise PoseEdgeError(f"TTA scales must be positive numbers, got {list(scales)}")
    if scale_flips is None:
        passes = []
        for v in scales:
            passes += [(v, False)] + ([(v, True)] if flip and v == 1.0 else [])
        return tuple(passes)
    if len(scale_flips) != len(scales):
        raise PoseEdgeError(f"{len(scales)} TTA scales but {len(scale_flips)} flips; give one flip per scale")
    return tuple(zip(scales, (bool(f) for f in scale_flips)))


def settings_passes(settings: Settings) -> tuple[tuple[float, bool], ...]:
    """The KAPAO passes a Settings asks for."""
    return tta_passes(settings.scales, settings.flip, settings.scale_flips)


def rescale_input(batch: np.ndarray, scale: float, multiple: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W, 3] -> (the batch resized by `scale` (bilinear) at the top-left and padded (114) on the right and
    bottom, the resize per axis float32 [2] (x, y) = new size / old size, rounded to whole pixels).

    multiple None: padded back to H x W (scale <= 1, a fixed-size backend); else to the next multiple of it."""
    n, h, w, _ = batch.shape
    new_h, new_w = round(h * scale), round(w * scale)
    out_h, out_w = (h, w) if multiple is None else (-(-new_h // multiple) * multiple, -(-new_w // multiple) * multiple)
    out = np.full((n, out_h, out_w, 3), PAD_VALUE, np.uint8)
    for i in range(n):
        out[i, :new_h, :new_w] = cv2.resize(batch[i], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out, np.array([new_w / w, new_h / h], np.float32)


def descale_rows(rows: np.ndarray, factor: np.ndarray, num_classes: int, num_keypoints: int) -> np.ndarray:
    """Decoded rows [..., D] of a rescaled input -> rows of the input before rescale_input (per-axis factor)."""
    rows = rows.copy()
    rows[..., 0:2] /= factor
    rows[..., 2:4] /= factor
    kp = rows[..., 5 + num_classes:].reshape(*rows.shape[:-1], num_keypoints, 2)
    rows[..., 5 + num_classes:] = (kp / factor).reshape(*rows.shape[:-1], 2 * num_keypoints)
    return rows


def _clip(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """[..., 2] (x, y) -> clipped to [0, W] x [0, H] of an image of image_size (h, w), float32."""
    h, w = image_size
    return np.clip(points, 0, np.array([w, h], np.float32)).astype(np.float32)


def postprocess_clipped(rows: np.ndarray, num_classes: int, num_keypoints: int, box: Letterbox,
                        thresholds: Thresholds = COCO_THRESHOLDS) -> Poses:
    """kapao_decode.postprocess_rows with KAPAO val.py's clipping to the image (Settings.clip), from its public steps.

    After each NMS pass and the letterbox's undoing, as its scale_coords / clip_coords do: person boxes are clipped
    to [0, W] x [0, H]; so are the first two keypoints of each pose (its pose array's first four numbers go through
    the box clip: nose and left eye, x and y) before fusion, so fusion measures against the clipped ones; and so are
    the keypoint-object boxes, whose centres (the fused positions) move with them. A quirk of the original, kept on
    purpose for reproducing its AP; the NMS passes themselves see the unclipped boxes, as there.
    """
    t, image_size = thresholds, box.image_size
    person_rows, person_conf, _ = kapao_decode.detect(rows, num_classes, t.conf_thres, t.iou_thres, [0], t.max_det,
                                                      t.max_nms)
    person = rows[person_rows]
    boxes = _clip(box.to_image(kapao_decode.boxes_xyxy(person).reshape(-1, 2, 2)), image_size).reshape(-1, 4)
    pose_xy = box.to_image(person[:, 5 + num_classes:].reshape(len(person), num_keypoints, 2))
    pose_xy[:, :2] = _clip(pose_xy[:, :2], image_size)
    keypoints = np.concatenate([pose_xy, np.zeros((len(person), num_keypoints, 1), np.float32)], axis=-1)
    if num_keypoints and t.use_kp_dets and len(person):
        kp_rows, kp_conf, kp_cls = kapao_decode.detect(rows, num_classes, t.conf_thres_kp, t.iou_thres_kp,
                                                       range(1, 1 + num_keypoints), t.max_det, t.max_nms)
        corners = _clip(box.to_image(kapao_decode.boxes_xyxy(rows[kp_rows]).reshape(-1, 2, 2)), image_size)
        keypoints = kapao_decode.fuse_keypoints(pose_xy, person_conf, corners.mean(axis=1), kp_conf, kp_cls - 1,
                                                t.conf_thres_kp_person, t.overwrite_tol)
    return Poses(keypoints=keypoints.astype(np.float32), boxes=boxes, scores=person_conf)


class SingleStagePipeline:
    """pipeline(frames) -> one Poses per frame (frame pixels; K = 0 for a person detector).

    backend: meta.family in FAMILIES, run(uint8 [N, H, W, 3] BGR) -> raw grids (and, for GPU decoding,
    run_device(...) -> [(pointer, shape, dtype)] per level). thresholds: the NMS and fusion settings.
    decoder: the decode stage (default NumpyKapaoDecoder). scales, flip, scale_flips: test-time augmentation
    (tta_passes); rect: the rectangular letterbox; clip: the reference's clipping (module docstring).
    """

    def __init__(self, backend, thresholds: Thresholds = COCO_THRESHOLDS, decoder=None,
                 scales: Sequence[float] = (1.0,), flip: bool = False, timer: StageTimer | None = None, *,
                 scale_flips: Sequence[bool] | None = None, rect: bool = False, clip: bool = False):
        meta = backend.meta
        if meta.family not in FAMILIES:
            raise PoseEdgeError(f"{meta.preset} is a {meta.family} model; the single-stage pipeline runs KAPAO "
                                "models and person detectors")
        self.backend, self.meta = backend, meta
        if meta.family == "person_detector" and thresholds.use_kp_dets:
            thresholds = Thresholds(**{**thresholds.__dict__, "use_kp_dets": False})
        self.thresholds = thresholds
        self.decoder = decoder or NumpyKapaoDecoder(meta, thresholds)
        self.passes = tta_passes(scales, flip, scale_flips)
        self.rect, self.clip = rect, clip
        self.input_size = (meta.input.height, meta.input.width)
        self.multiple = max(meta.strides)
        self.other_sizes = takes_other_sizes(backend)
        if not self.other_sizes:
            fixed = (f"{type(backend).__name__} of {meta.preset} has a fixed {self.input_size[0]}x{self.input_size[1]} "
                     "input; use its ONNX export (dynamic height and width) in ONNX Runtime")
            if rect:
                raise PoseEdgeError(f"the rectangular letterbox (rect) needs a backend that takes other input sizes: "
                                    f"{fixed}")
            if any(v > 1 for v, _ in self.passes):
                raise PoseEdgeError(f"TTA scales above 1 need a backend that takes larger inputs: {fixed}")
        if self.decoder.on_device and (self.tta or clip):
            raise PoseEdgeError("test-time augmentation and clipping combine decoded rows on the host; use the NumPy "
                                "decoder (decode='numpy') with flip, scales or clip")
        self.timer = timer or StageTimer()

    @property
    def tta(self) -> bool:
        return self.passes != PLAIN

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        """Poses per frame, every value finite (non-finite ones dropped and counted: Poses.finite)."""
        return [p.finite() for p in self._run(frames)]

    def _run(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        if not len(frames):
            return []
        with self.timer("preprocess"):
            placed = [letterbox(f, rect_input_size(f.shape[:2], self.input_size, self.multiple) if self.rect
                                else self.input_size) for f in frames]
        # Images of one canvas shape run as one batch (all of them, unless rect gave them different shapes).
        results: list = [None] * len(frames)
        shapes = [canvas.shape for canvas, _ in placed]
        for shape in dict.fromkeys(shapes):
            index = [i for i, s in enumerate(shapes) if s == shape]
            with self.timer("preprocess"):
                batch = np.stack([placed[i][0] for i in index])
            for i, poses in zip(index, self._run_batch(batch, [placed[i][1] for i in index])):
                results[i] = poses
        return results

    def _run_batch(self, batch: np.ndarray, boxes: list[Letterbox]) -> list[Poses]:
        if self.tta or self.clip:
            return self._on_host(batch, boxes)
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

    def _on_host(self, batch: np.ndarray, boxes: list[Letterbox]) -> list[Poses]:
        """Candidate rows of every pass, in letterboxed-input pixels, concatenated per image (pass after pass) before
        one NMS, as the reference concatenates all rows; then the post-processing, with clipping where asked."""
        m = self.meta
        nc, k = m.num_classes, m.num_keypoints
        per_image = [[] for _ in range(len(batch))]
        width = batch.shape[2]
        for scale, mirrored in self.passes:
            images = np.ascontiguousarray(batch[:, :, ::-1]) if mirrored else batch
            if scale != 1.0:
                with self.timer("preprocess"):
                    images, factor = rescale_input(images, scale, self.multiple if self.other_sizes else None)
            for image_rows, rows in zip(per_image, self._candidate_rows(images)):
                if scale != 1.0:  # the resize rounds to whole pixels: undo it per axis
                    rows = descale_rows(rows, factor, nc, k)
                image_rows.append(deflip_rows(rows, width, nc, k) if mirrored else rows)
        post = postprocess_clipped if self.clip else kapao_decode.postprocess_rows
        with self.timer("postprocess"):
            return [post(np.concatenate(rows), nc, k, box, self.thresholds) for rows, box in zip(per_image, boxes)]
