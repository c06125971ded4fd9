"""How much a lower-precision graph changes what the decoders make of its outputs, as one number.

FP16 and INT8 change raw outputs a little everywhere; what matters for AP is whether keypoints move and confidences
change where the network sees people. `distortion(reference, candidate, meta)` decodes both output sets and compares
them the way COCO scoring would feel it:

    simple_baseline   heatmaps -> keypoints (argmax + quarter offset, pose_edge.runtime.heatmap_decode).
                      similarity = OKS of each candidate keypoint against the reference one (COCO sigmas, the crop's
                      half area as the person's area), weighted by the reference keypoint score.
    kapao, detector   grids -> decoded rows (pose_edge.runtime.kapao_decode.decode); the rows that either side scores
                      above `conf` (obj * best class) are compared: box IoU, and for KAPAO pose objects the OKS of
                      their 17 keypoints, weighted by the reference confidence.
    cost = (1 - similarity) + mean |confidence change| over the same keypoints / rows.

A cost of 0 is identical decoding; 0.02 is, for instance, keypoints that agree with FP32 at an OKS of 0.98 on average
with unchanged confidences. All inputs are lists of float arrays, batch-first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose_edge.keypoints import OKS_SIGMAS
from pose_edge.model_meta import ModelMeta

ROW_CONF = 0.1  # rows above this confidence on either side are compared
MIN_ROWS = 32  # per image, so that an untrained network (no confident row) is still measured on its best rows


@dataclass(frozen=True)
class Distortion:
    """cost: the number to minimise; similarity in [0, 1]; conf_change: mean |delta confidence|; shift_px: mean
    keypoint (or box centre) displacement in input pixels over the compared items."""

    cost: float
    similarity: float
    conf_change: float
    shift_px: float

    def as_dict(self) -> dict:
        return {k: round(float(v), 5) for k, v in self.__dict__.items()}


def _oks(d2: np.ndarray, area: np.ndarray | float, sigmas: np.ndarray) -> np.ndarray:
    k2 = (2.0 * sigmas) ** 2
    return np.exp(-d2 / (2.0 * np.maximum(area, 1.0)[..., None] * k2))


def heatmap_distortion(reference: np.ndarray, candidate: np.ndarray, meta: ModelMeta) -> Distortion:
    """reference, candidate: heatmaps [N, K, h, w]."""
    from pose_edge.runtime.heatmap_decode import decode_heatmaps

    ref = decode_heatmaps(np.asarray(reference, np.float32), refine="quarter")
    cand = decode_heatmaps(np.asarray(candidate, np.float32), refine="quarter")
    stride = meta.heatmap_stride or meta.input.height / reference.shape[2]
    d2 = ((ref[..., :2] - cand[..., :2]) ** 2).sum(-1) * stride ** 2  # input pixels^2
    area = np.full(len(ref), 0.5 * meta.input.height * meta.input.width)
    sigmas = OKS_SIGMAS[: ref.shape[1]] if ref.shape[1] == len(OKS_SIGMAS) else np.full(ref.shape[1], 0.05)
    oks = _oks(d2, area, sigmas)
    w = np.clip(ref[..., 2], 0.0, 1.0)
    w = w if w.sum() > 1e-6 else np.ones_like(w)  # untrained: every keypoint counts the same
    similarity = float((oks * w).sum() / w.sum())
    conf = float(np.abs(ref[..., 2] - cand[..., 2]).mean())
    shift = float((np.sqrt(d2) * w).sum() / w.sum())
    return Distortion(1.0 - similarity + conf, similarity, conf, shift)


def _row_conf(rows: np.ndarray, num_classes: int) -> np.ndarray:
    return rows[..., 4] * rows[..., 5:5 + num_classes].max(-1)


def _iou_cxcywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a1, a2 = a[..., :2] - a[..., 2:4] / 2, a[..., :2] + a[..., 2:4] / 2
    b1, b2 = b[..., :2] - b[..., 2:4] / 2, b[..., :2] + b[..., 2:4] / 2
    inter = np.clip(np.minimum(a2, b2) - np.maximum(a1, b1), 0, None).prod(-1)
    union = a[..., 2:4].prod(-1) + b[..., 2:4].prod(-1) - inter
    return inter / np.maximum(union, 1e-9)


def grid_distortion(reference: list[np.ndarray], candidate: list[np.ndarray], meta: ModelMeta) -> Distortion:
    """reference, candidate: raw grids, one [N, A*D, H/S, W/S] per stride."""
    from pose_edge.runtime.kapao_decode import decode

    nc, nk = meta.num_classes, meta.num_keypoints
    ref = decode([np.asarray(r, np.float32) for r in reference], meta.strides, meta.anchors, nc, nk)
    cand = decode([np.asarray(c, np.float32) for c in candidate], meta.strides, meta.anchors, nc, nk)
    ref_conf, cand_conf = _row_conf(ref, nc), _row_conf(cand, nc)
    selected = np.maximum(ref_conf, cand_conf) > ROW_CONF
    top = np.argsort(-ref_conf, axis=1)[:, :MIN_ROWS]  # so that every image contributes its best rows
    np.put_along_axis(selected, top, True, axis=1)

    r, c = ref[selected], cand[selected]
    w = np.maximum(ref_conf[selected], 1e-3)
    sims = [_iou_cxcywh(r, c)]
    weights = [w]
    shift = np.sqrt(((r[:, :2] - c[:, :2]) ** 2).sum(-1))
    if nk:
        pose = r[:, 5:5 + nc].argmax(-1) == 0  # rows that are pose objects carry the keypoints that matter
        if pose.any():
            rk = r[pose, 5 + nc:].reshape(-1, nk, 2)
            ck = c[pose, 5 + nc:].reshape(-1, nk, 2)
            d2 = ((rk - ck) ** 2).sum(-1)
            area = 0.53 * r[pose, 2] * r[pose, 3]  # COCO's box-to-area ratio for people
            sims.append(_oks(d2, area, OKS_SIGMAS[:nk]).mean(-1))
            weights.append(w[pose])
    sim = float(sum((s * wt).sum() for s, wt in zip(sims, weights)) / sum(wt.sum() for wt in weights))
    conf = float(np.abs(ref_conf[selected] - cand_conf[selected]).mean())
    return Distortion(1.0 - sim + conf, sim, conf, float((shift * w).sum() / w.sum()))


def distortion(reference: list[np.ndarray], candidate: list[np.ndarray], meta: ModelMeta) -> Distortion:
    if meta.family == "simple_baseline":
        return heatmap_distortion(reference[0], candidate[0], meta)
    return grid_distortion(reference, candidate, meta)
