"""Top-down training samples: one person crop per annotation, augmented, with Gaussian heatmap targets.

A sample is the person's box turned into a crop (pose_edge.runtime.topdown: centre, aspect fix, 1.25 padding), then
a random scale, rotation and left-right flip (and optionally the half-body crop), warped in one cv2.warpAffine to the
input size; its keypoints go through the same affine and become heatmaps (pose_edge.heatmap_codec). The
flip mirrors the crop (x_in -> W_in - 1 - x_in) and swaps left/right keypoints, the same as mirroring the image first.

People used (reference §B.5): non-crowd person annotations with at least one labelled keypoint and a box of positive
area after clipping to the image. Every random number of a sample comes from sample_rng(seed, epoch, index), so the
samples are the same whatever worker or rank loads them, and a resumed run sees what the uninterrupted one saw.

Augmentation policies are named (`AUGMENT_POLICIES`); an unknown name raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pose_edge.data.sampling import sample_rng
from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import BOX_PADDING, apply_affine, box_to_center_size, crop_affine
from pose_edge.heatmap_codec import GaussianHeatmapCodec
from pose_edge.keypoints import FLIP_PERM, NUM_KEYPOINTS

UPPER_BODY = tuple(range(11))  # nose .. wrists
LOWER_BODY = tuple(range(11, NUM_KEYPOINTS))  # hips .. ankles


@dataclass(frozen=True)
class TopDownAugment:
    """scale: s *= clip(N(0,1) * scale + 1, 1 - scale, 1 + scale); rotation: degrees, clip(N(0,1) * r, -2r, 2r)
    with probability rotation_prob; flip: probability of a left-right flip; half_body: probability of the half-body
    crop for people with more than half_body_min_joints labelled keypoints (box x 1.5 around half the body)."""

    scale: float = 0.0
    rotation: float = 0.0
    rotation_prob: float = 0.0
    flip: float = 0.0
    half_body: float = 0.0
    half_body_min_joints: int = 8


AUGMENT_POLICIES = {
    "sb": TopDownAugment(scale=0.3, rotation=40, rotation_prob=0.6, flip=0.5),  # Simple Baselines' ResNet configs
    "hrnet": TopDownAugment(scale=0.35, rotation=45, rotation_prob=0.6, flip=0.5, half_body=0.3),  # HRNet/DARK
    "light": TopDownAugment(scale=0.25, rotation=30, rotation_prob=0.5, flip=0.5),  # short CPU runs
    "none": TopDownAugment(),
}


def augment_policy(name: str) -> TopDownAugment:
    if name not in AUGMENT_POLICIES:
        raise PoseEdgeError(f"unknown augmentation policy {name!r}; expected one of {', '.join(AUGMENT_POLICIES)}")
    return AUGMENT_POLICIES[name]


def person_samples(data, min_keypoints: int = 1) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(image_id, box float64 [4] xywh clipped to the image, keypoints float64 [K, 3]) for each usable person."""
    samples = []
    for image_id in data.image_ids:
        info = data.image_info(image_id)
        w_img, h_img = info.get("width"), info.get("height")
        for ann in data.person_annotations(image_id):
            kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            if (kps[:, 2] > 0).sum() < min_keypoints:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = x1 + max(0.0, w - 1), y1 + max(0.0, h - 1)
            if w_img and h_img:
                x2, y2 = min(w_img - 1.0, x2), min(h_img - 1.0, y2)
            if ann.get("area", 1) > 0 and x2 >= x1 and y2 >= y1:
                samples.append((image_id, np.array([x1, y1, x2 - x1 + 1, y2 - y1 + 1]), kps))
    return samples


def half_body_box(keypoints: np.ndarray, aspect_ratio: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """(centre, size) of the upper or lower body (HRNet's half_body_transform), or None if too few joints."""
    visible = keypoints[:, 2] > 0
    upper = [j for j in UPPER_BODY if visible[j]]
    lower = [j for j in LOWER_BODY if visible[j]]
    chosen = upper if (rng.normal() < 0.5 and len(upper) > 2) else (lower if len(lower) > 2 else upper)
    if len(chosen) < 2:
        return None
    pts = keypoints[chosen, :2]
    lo, hi = pts.min(0), pts.max(0)
    center, size = box_to_center_size(np.concatenate([lo, hi - lo + 1])[None], aspect_ratio, padding=1.5)
    return pts.mean(0), size[0]


class TopDownDataset(torch.utils.data.Dataset):
    """Person crops of one split for training: items are dicts with
    image uint8 [H_in, W_in, 3] BGR, heatmaps float32 [K, h, w], weights float32 [K] (see the module docstring)."""

    def __init__(self, data, input_size: tuple[int, int], sigma: float, augment: str = "none", seed: int = 0,
                 stride: int = 4, padding: float = BOX_PADDING):
        self.data = data
        self.input_size = tuple(input_size)
        self.codec = GaussianHeatmapCodec(self.input_size, stride, sigma)
        self.policy = augment_policy(augment)
        self.seed, self.epoch, self.padding = seed, 0, padding
        self.samples = person_samples(data)
        if not self.samples:
            raise PoseEdgeError(f"{data.ann_file}: no person with labelled keypoints to train on")

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def crop_transform(self, index: int) -> np.ndarray:
        """The image -> input affine [2, 3] of sample `index` this epoch, and whether it is flipped."""
        _, box, kps = self.samples[index]
        h_in, w_in = self.input_size
        p = self.policy
        rng = sample_rng(self.seed, self.epoch, index)
        center, size = box_to_center_size(box[None], w_in / h_in, self.padding)
        center, size = center[0], size[0]
        if p.half_body and (kps[:, 2] > 0).sum() > p.half_body_min_joints and rng.uniform() < p.half_body:
            half = half_body_box(kps, w_in / h_in, rng)
            if half is not None:
                center, size = half
        scale = np.clip(rng.normal() * p.scale + 1, 1 - p.scale, 1 + p.scale) if p.scale else 1.0
        rotation = (np.clip(rng.normal() * p.rotation, -2 * p.rotation, 2 * p.rotation)
                    if p.rotation and rng.uniform() < p.rotation_prob else 0.0)
        flip = bool(p.flip and rng.uniform() < p.flip)
        m = crop_affine(center[None], (size * scale)[None], self.input_size, np.array([rotation]), np.array([flip]))
        return m[0], flip

    def __getitem__(self, index: int) -> dict:
        image_id, _, kps = self.samples[index]
        image = self.data.load_image(image_id)
        m, flip = self.crop_transform(index)
        h_in, w_in = self.input_size
        crop = cv2.warpAffine(image, m, (w_in, h_in), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        kp_in = kps.copy()
        kp_in[:, :2] = apply_affine(m[None], kps[None, :, :2])[0]
        if flip:
            kp_in = kp_in[list(FLIP_PERM)]
        heatmaps, weights = self.codec.encode(kp_in)
        return {"image": crop, "heatmaps": heatmaps, "weights": weights, "image_id": image_id}


def collate(samples: list[dict]) -> dict:
    """images uint8 [N, H, W, 3] BGR, heatmaps float32 [N, K, h, w], weights float32 [N, K], image_ids [N]."""
    return {
        "images": torch.from_numpy(np.stack([s["image"] for s in samples])),
        "heatmaps": torch.from_numpy(np.stack([s["heatmaps"] for s in samples])),
        "weights": torch.from_numpy(np.stack([s["weights"] for s in samples])),
        "image_ids": torch.tensor([s["image_id"] for s in samples]),
    }
