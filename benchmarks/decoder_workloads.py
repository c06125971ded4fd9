"""Inputs for the decoder benchmarks (bench_vs_originals.py, bench_decoders.py): raw network outputs shaped and
distributed like a trained model's, generated from a seed so that every run times the same data.

    maps, center, scale = heatmap_workload(rng, crops)        # Simple Baseline 256x192: 17 maps of 64x48 per crop
    grids, letterboxes = kapao_workload(rng, images=4)         # KAPAO-S at 1280: 4 raw level grids
"""

from __future__ import annotations

import numpy as np

from pose_edge.geometry import fit

# KAPAO-S (P6) at 1280: strides, anchors (w, h) in input pixels, 18 classes (person + 17 keypoints), 17 keypoints.
KAPAO_STRIDES = (8, 16, 32, 64)
KAPAO_ANCHORS = (((19, 27), (44, 40), (38, 94)), ((96, 68), (86, 152), (180, 137)),
                 ((140, 301), (303, 264), (238, 542)), ((436, 615), (739, 380), (925, 792)))
NC, K = 18, 17
D = 5 + NC + 2 * K
# (height, width) of the images: each letterboxes into 1280 x 1280 with an integer scale and padding, so that
# KAPAO's scale_coords and our Letterbox undo it with the same arithmetic.
IMAGE_SIZES = ((720, 1280), (1280, 960), (960, 1280), (720, 1280))


def heatmap_workload(rng: np.random.Generator, crops: int, k: int = 17, h: int = 64, w: int = 48,
                     sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SB-256x192-like heatmaps float32 [crops, k, h, w]: a Gaussian (sigma px) at a sub-pixel spot of every map,
    sometimes near or past the border (truncated people), heights 0.1..1, noise of 0.01; and each crop's box as
    Simple Baselines describes it: center [crops, 2] (x, y) image pixels, scale [crops, 2] (w, h) / 200."""
    ys, xs = np.mgrid[0:h, 0:w]
    cx = rng.uniform(-2, w + 1, (crops, k, 1, 1))
    cy = rng.uniform(-2, h + 1, (crops, k, 1, 1))
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) * rng.uniform(0.1, 1.0, (crops, k, 1, 1))
    maps = (maps + rng.normal(0, 0.01, maps.shape)).astype(np.float32)
    center = np.stack([rng.uniform(100, 1180, crops), rng.uniform(100, 620, crops)], axis=1)
    height = rng.uniform(100, 600, crops)
    scale = np.stack([height * w / h, height], axis=1) / 200.0
    return maps, center, scale


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)  # targets outside the decodable range saturate
    return np.log(p / (1 - p)).astype(np.float32)


def kapao_workload(rng: np.random.Generator, images: int = 4, size: int = 1280, persons: int = 10,
                   objectness: float = -7.75):
    """Raw KAPAO-S grids (list of float32 [images, 3*D, size/s, size/s]) and one Letterbox per image.

    Background rows: objectness logits ~ N(objectness, 1.5), which leaves about 4,300 person candidates per image
    at conf 0.001 (what KAPAO-S gives on COCO val at 1280), person class ~ N(-2, 1.5), keypoint classes
    ~ N(-4.5, 1.5), box and keypoint channels ~ N(0, 1) (boxes of about an anchor's size). People: `persons` per
    image, inside the image, each detected from 4 neighbouring cells with falling scores (NMS removes the
    duplicates), with keypoint objects near 70 % of their keypoints, kept 40 px inside the image (so that the
    reference's clipping of keypoint-object boxes to the image never changes them).
    """
    grids = []
    for s in KAPAO_STRIDES:
        g = rng.normal(0.0, 1.0, (images, 3 * D, size // s, size // s)).astype(np.float32)
        for a in range(3):
            g[:, a * D + 4] = rng.normal(objectness, 1.5, g[:, a * D + 4].shape)
            g[:, a * D + 5] = rng.normal(-2.0, 1.5, g[:, a * D + 5].shape)
            g[:, a * D + 6:a * D + 5 + NC] = rng.normal(-4.5, 1.5, g[:, a * D + 6:a * D + 5 + NC].shape)
        grids.append(g)
    letterboxes = [fit(IMAGE_SIZES[i % len(IMAGE_SIZES)], (size, size)) for i in range(images)]
    for image, box in enumerate(letterboxes):
        left, top = box.pad
        right = left + round(box.image_size[1] * box.scale[0])
        bottom = top + round(box.image_size[0] * box.scale[1])
        for person in range(persons):
            level = int(rng.integers(1, 3))
            anchor = int(rng.integers(3))
            s = KAPAO_STRIDES[level]
            aw, ah = KAPAO_ANCHORS[level][anchor]
            bw, bh = aw * rng.uniform(0.7, 1.4), ah * rng.uniform(0.7, 1.4)
            cx = rng.uniform(left + bw / 2 + 10, right - bw / 2 - 10) if right - left > bw + 20 else (left + right) / 2
            cy = rng.uniform(top + bh / 2 + 10, bottom - bh / 2 - 10) if bottom - top > bh + 20 else (top + bottom) / 2
            gx, gy = int(cx // s), int(cy // s)
            kps = np.stack([cx + rng.uniform(-0.45, 0.45, K) * bw, cy + rng.uniform(-0.45, 0.45, K) * bh], -1)
            kps = np.clip(kps, [left + 40, top + 40], [right - 41, bottom - 41])
            for dup in range(4):  # the same person from neighbouring cells, lower scores
                x, y = min(gx + dup % 2, size // s - 1), min(gy + dup // 2, size // s - 1)
                raw = grids[level][image, anchor * D:(anchor + 1) * D, y, x]
                raw[0:2] = _logit(((cx / s - x) + 0.5) / 2), _logit(((cy / s - y) + 0.5) / 2)
                raw[2:4] = _logit(np.sqrt(bw / aw) / 2), _logit(np.sqrt(bh / ah) / 2)
                raw[4] = _logit(0.95 - 0.2 * dup - 0.011 * person)  # distinct scores
                raw[5], raw[6:5 + NC] = _logit(0.9), -8.0
                raw[5 + NC::2] = _logit(((kps[:, 0] - x * s) / aw + 2) / 4)
                raw[6 + NC::2] = _logit(((kps[:, 1] - y * s) / ah + 2) / 4)
            for j in range(K):  # keypoint objects near most keypoints
                if rng.random() < 0.3:
                    continue
                kx, ky = np.clip(kps[j] + rng.normal(0, 4, 2), [left + 32, top + 32], [right - 33, bottom - 33])
                x, y = int(kx // 8), int(ky // 8)
                raw = grids[0][image, 0:D, y, x]
                raw[0], raw[1] = _logit(((kx / 8 - x) + 0.5) / 2), _logit(((ky / 8 - y) + 0.5) / 2)
                raw[2], raw[3] = _logit(np.sqrt(40 / 19) / 2), _logit(np.sqrt(40 / 27) / 2)  # a 40 px box
                raw[4], raw[5:5 + NC] = _logit(rng.uniform(0.5, 0.95)), -8.0
                raw[6 + j] = _logit(0.9)
    return grids, letterboxes
