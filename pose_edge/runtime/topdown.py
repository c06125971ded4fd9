"""The top-down pipeline, torch-free: person boxes -> affine crops -> pose backend -> heatmaps -> poses in the frame.

    pipeline = TopDownPipeline(backend, settings)              # backend.meta.family == "simple_baseline"
    poses = pipeline(frame, boxes, box_scores)                  # frame uint8 [H, W, 3] BGR; boxes [P, 4] xyxy

Geometry: crops by pose_edge.geometry (box -> centre and padded size -> image -> input affine); heatmap -> input by
the model's heatmap codec (pose_edge.heatmap_codec), so heatmap -> frame is one [2, 3] matrix per crop, applied by
the decode stage: NumpyHeatmapDecoder (pose_edge.runtime.heatmap_decode) on the host, or the CUDA kernel
(pose_edge.kernels.stages.GpuHeatmapDecoder) on the engine's output buffer where it lies. Both follow the model's
convention (ModelMeta.convention: ours, the original Simple Baselines' or DarkPose's) through `codec_for(meta)`,
which also gives the DARK blur kernel and, with refine "auto", the refinement the convention's original code uses.
Flip test: the crops flipped left-right run with the originals in one batch; their heatmaps are flipped back
(reversed along W, left/right channels swapped) and averaged with the originals on the host. With our convention
and DarkPose's the flip is exact, so no shift; with Simple Baselines' the flipped-back maps move one column right
first, as the original does (its x_hm = x_in / 4 convention leaves them 0.75 heatmap px to the left).
Scoring (reference §B.6): keypoint score = peak of the (averaged) heatmap; instance score = box score x mean of the
keypoint scores above 0.2 (0 if none); greedy OKS-NMS per frame at OKS 0.9, the OKS computed with the padded box
areas and all 17 keypoints.
Boxes from upstream (a detector, a user) are checked per person: non-finite, empty or wholly off-frame boxes are
dropped (counted in Poses.extra["dropped_boxes"]), the rest clipped to the frame. A keypoint whose heatmap peak is
NaN or infinite (a broken model, FP16 overflow) becomes (0, 0, 0), not found, counted in
Poses.extra["non_finite_keypoints"].
"""

from __future__ import annotations

import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import box_to_center_size, crop_affine, warp_crops
from pose_edge.heatmap_codec import GaussianHeatmapCodec
from pose_edge.keypoints import FLIP_PERM, OKS_SIGMAS
from pose_edge.runtime.heatmap_decode import REFINE_MODES, decode_heatmaps
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import AUTO_REFINE, TopDownSettings
from pose_edge.runtime.timing import StageTimer

KEYPOINT_SCORE_THRESHOLD = TopDownSettings.keypoint_threshold
OKS_NMS_THRESHOLD = TopDownSettings.oks_nms


def flip_back(heatmaps: np.ndarray, flip_perm=FLIP_PERM, shift: bool = False) -> np.ndarray:
    """Heatmaps [N, K, h, w] of left-right flipped crops -> heatmaps of the original crops.

    Reverses the W axis and swaps left/right channels. shift=True also moves the result one column to the right
    (column 0 keeps its value), Simple Baselines' correction for its x_hm = x_in / 4 convention (the codec's
    flip_shift says when); ours and DarkPose's need none.
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
    mean = np.where(above, s, 0.0).sum(1) / np.maximum(above.sum(1), 1)  # 0 / 1 where none is above
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
    if len(order) <= 1:  # nothing to compare (one person is the common frame)
        return order.astype(np.int64, copy=False)
    oks = oks_matrix(keypoints, np.asarray(areas, np.float64))
    kept, suppressed = [], np.zeros(len(order), bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= oks[i] > threshold
    return np.asarray(kept, np.int64)


# ------------------------------------------------------------------------------------------------------------ boxes


def clean_boxes(boxes, scores, frame_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """Upstream person boxes -> (float64 [P', 4] xyxy clipped to the frame, float64 [P'] scores, number dropped).

    boxes [P, 4] xyxy and scores [P] (or None: all 1). A box is dropped when any value is non-finite, its score is
    non-finite, it has no area, or it lies wholly outside the frame. Mismatched lengths are an error, not garbage.
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4)), np.zeros(0), 0
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise PoseEdgeError(f"person boxes must be [P, 4] (x1, y1, x2, y2), got shape {list(boxes.shape)}")
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise PoseEdgeError(f"{len(boxes)} person boxes but {len(scores)} box scores")
    h, w = frame_shape[:2]
    low, high = boxes[:, :2], boxes[:, 2:]  # (x1, y1), (x2, y2): a handful of whole-array steps, not one per column
    with np.errstate(invalid="ignore"):
        keep = ((high > low) & (high > 0) & (low < (w, h))).all(1) & np.isfinite(boxes).all(1) & np.isfinite(scores)
    if not keep.all():
        boxes, scores = boxes[keep], scores[keep]
    return np.clip(boxes, 0, (w, h, w, h)), scores, int(len(keep) - len(boxes))


# ------------------------------------------------------------------------------------------------------- pipeline


class NumpyHeatmapDecoder:
    """The host decode stage: heatmaps [N, K, H, W] + heatmap -> frame affines [N, 2, 3] -> float32 [N, K, 3]."""

    on_device = False
    name = "numpy"

    def __init__(self, refine: str = "dark", dark_kernel: int = 11):
        if refine not in REFINE_MODES:  # "auto" is resolved by decode_options before a decoder is built
            raise PoseEdgeError(f"unknown refine {refine!r}; expected one of {', '.join(REFINE_MODES)}")
        self.refine, self.dark_kernel = refine, dark_kernel

    def __call__(self, heatmaps: np.ndarray, hm_to_image: np.ndarray) -> np.ndarray:
        return decode_heatmaps(heatmaps, hm_to_image, self.refine, self.dark_kernel)


def codec_for(meta) -> GaussianHeatmapCodec:
    """The heatmap codec a Simple Baseline model was trained with: its meta's convention, stride, sigma and DARK
    kernel (meta.extra["dark_kernel"] where the model records one, else the convention's)."""
    codec = GaussianHeatmapCodec((meta.input.height, meta.input.width), meta.heatmap_stride or 4,
                                 meta.extra.get("sigma", 2.0), meta.convention)
    if meta.extra.get("dark_kernel"):
        codec.dark_kernel = int(meta.extra["dark_kernel"])
    return codec


def decode_options(meta, settings: TopDownSettings) -> tuple[str, int]:
    """(refine, dark_kernel) a model is decoded with: settings.refine, or for "auto" its convention's."""
    codec = codec_for(meta)
    return (codec.refine if settings.refine == AUTO_REFINE else settings.refine), codec.dark_kernel


def crop_geometry(boxes: np.ndarray, codec: GaussianHeatmapCodec, padding: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person boxes float [P, 4] xyxy (frame pixels) -> (image -> input affines [P, 2, 3], heatmap -> image affines
    [P, 2, 3], crop sizes [P, 2] (w, h) in frame pixels), float64, by the codec's convention."""
    h_in, w_in = codec.input_size
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    center, size = box_to_center_size(xywh, w_in / h_in, padding, codec.convention)
    to_input = crop_affine(center, size, codec.input_size, convention=codec.convention)
    # Unrotated, each crop is a scale k and a shift t: the inverse is 1/k and -t/k, without a 3x3 inverse per frame.
    scale = to_input[:, 0, 0]
    to_image = np.zeros_like(to_input)
    to_image[:, 0, 0] = to_image[:, 1, 1] = 1.0 / scale
    to_image[:, :, 2] = to_input[:, :, 2] / -scale[:, None]
    return to_input, codec.heatmap_to_image(to_image), size


class TopDownPipeline:
    """Poses of the people in one frame, given their boxes. See the module docstring for every step."""

    def __init__(self, backend, settings: TopDownSettings = TopDownSettings(), decoder=None, flip: bool = False,
                 flip_shift: bool | None = None, timer: StageTimer | None = None):
        meta = backend.meta
        if meta.family != "simple_baseline":
            raise PoseEdgeError(f"{meta.preset} is a {meta.family} model; the top-down pipeline needs a heatmap "
                                "model (simple_baseline)")
        self.backend, self.meta, self.settings = backend, meta, settings
        self.input_size = (meta.input.height, meta.input.width)
        self.codec = codec_for(meta)
        self.decoder = decoder or NumpyHeatmapDecoder(*decode_options(meta, settings))
        if self.decoder.on_device and flip:
            raise PoseEdgeError("the flip test averages heatmaps on the host; use the NumPy decoder (decode='numpy') "
                                "with flip")
        # flip_shift None: as the model's convention does it (only Simple Baselines' shifts).
        self.flip, self.flip_shift = flip, self.codec.flip_shift if flip_shift is None else flip_shift
        self.timer = timer or StageTimer()

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops [P, H_in, W_in, 3] -> float32 heatmaps [P, K, h, w], flip-averaged when flip is on.
        Crops (and their mirror images) go to the backend as one batch, split only above max_batch."""
        flip, step = self.flip, self.settings.max_batch
        batch = np.concatenate([crops, crops[:, :, ::-1]]) if flip else crops
        outs = [self.backend.run(np.ascontiguousarray(batch[i:i + step]))[0] for i in range(0, len(batch), step)]
        hm = np.concatenate(outs).astype(np.float32, copy=False)
        if hm.ndim != 4 or hm.shape[0] != len(batch):
            raise PoseEdgeError(f"the pose model returned {hm.shape}, expected heatmaps [{len(batch)}, K, h, w]")
        if flip:
            p = len(crops)
            hm = (hm[:p] + flip_back(hm[p:], shift=self.flip_shift)) / 2
        return hm

    def _keypoints(self, crops: np.ndarray, hm_to_image: np.ndarray) -> np.ndarray:
        """Crops -> keypoints float32 [P, K, 3] in frame pixels, through the decode stage."""
        on_device = self.decoder.on_device and hasattr(self.backend, "run_device")
        if on_device and len(crops) <= self.settings.max_batch:
            with self.timer("inference"):
                heatmaps = self.backend.run_device(np.ascontiguousarray(crops))[0]
            with self.timer("postprocess"):
                return self.decoder.decode_device(heatmaps, hm_to_image)
        with self.timer("inference"):
            heatmaps = self.heatmaps(crops)
        with self.timer("postprocess"):
            return self.decoder(heatmaps, hm_to_image)

    def __call__(self, frame: np.ndarray, boxes, box_scores=None) -> Poses:
        """frame uint8 [H, W, 3] BGR; boxes [P, 4] xyxy frame pixels; box_scores [P] (default 1) -> Poses."""
        s = self.settings
        k = self.meta.num_keypoints
        with self.timer("preprocess"):
            boxes, box_scores, dropped = clean_boxes(boxes, box_scores, frame.shape)
            if len(boxes) == 0:
                empty = Poses.empty(k)
                empty.extra["dropped_boxes"] = dropped
                return empty
            to_input, hm_to_image, size = crop_geometry(boxes, self.codec, s.box_padding)
            crops = warp_crops(frame, to_input, self.input_size)
        keypoints = self._keypoints(crops, hm_to_image)
        with self.timer("postprocess"):
            bad = ~np.isfinite(keypoints).all(-1)  # a NaN or Inf heatmap peak: the keypoint is not found
            if bad.any():
                keypoints = np.where(bad[..., None], np.float32(0), keypoints)
            scores = rescore(keypoints, box_scores, s.keypoint_threshold)
            keep = np.arange(len(boxes))
            if s.oks_nms is not None:
                keep = oks_nms(keypoints, scores, size[:, 0] * size[:, 1], s.oks_nms)
        poses = Poses(keypoints[keep], boxes[keep].astype(np.float32), scores[keep].astype(np.float32))
        poses.extra["dropped_boxes"] = dropped
        if bad.any():
            poses.extra["non_finite_keypoints"] = int(bad.sum())
        return poses
