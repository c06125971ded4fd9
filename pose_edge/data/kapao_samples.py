"""KAPAO / person-detector training and validation samples over a COCO-format keypoints data set.

A sample is the image placed on the input canvas (letterbox, or a mosaic of four images), then a random scale and
translation, a left-right flip and HSV jitter, and its people encoded as KAPAO objects (pose_edge.data.kapao_labels).
People travel as boxes + keypoints through every geometric step, so the keypoint objects are made at the end at
kp_bbox x the canvas's longest side, as the reference resets them (reference §A.8).

Augmentation policies are named (`AUGMENT_POLICIES`); an unknown name raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pose_edge.data.coco import CocoKeypoints
from pose_edge.data.kapao_labels import KapaoLabels
from pose_edge.data.sampling import sample_rng
from pose_edge.errors import PoseEdgeError
from pose_edge.geometry import PAD_VALUE, letterbox
from pose_edge.keypoints import FLIP_PERM, NUM_KEYPOINTS


@dataclass(frozen=True)
class AugmentPolicy:
    mosaic: float = 0.0  # probability of a four-image mosaic
    hsv: tuple[float, float, float] = (0.0, 0.0, 0.0)  # hue, saturation, value gains
    translate: float = 0.0  # fraction of the canvas
    scale: float = 0.0  # zoom in 1 +- scale
    fliplr: float = 0.0  # probability of a left-right flip


AUGMENT_POLICIES = {
    # hyp.kp-p6.yaml: mosaic 1.0, hsv (0.015, 0.7, 0.4), translate 0.1, scale 0.9, fliplr 0.5
    "kapao": AugmentPolicy(mosaic=1.0, hsv=(0.015, 0.7, 0.4), translate=0.1, scale=0.9, fliplr=0.5),
    # for a few minutes of CPU training on small synthetic sets: every image whole, milder zoom
    "light": AugmentPolicy(mosaic=0.0, hsv=(0.015, 0.5, 0.3), translate=0.1, scale=0.3, fliplr=0.5),
    "none": AugmentPolicy(),
}


def augment_policy(name: str) -> AugmentPolicy:
    if name not in AUGMENT_POLICIES:
        raise PoseEdgeError(f"unknown augmentation policy {name!r}; expected one of {', '.join(AUGMENT_POLICIES)}")
    return AUGMENT_POLICIES[name]


@dataclass
class People:
    """boxes [P, 4] xywh (top-left corner) and keypoints [P, K, 3] (x, y, v) in the pixels of some image."""

    boxes: np.ndarray
    keypoints: np.ndarray

    def affine(self, scale: float, shift: tuple[float, float]) -> "People":
        boxes = self.boxes.copy()
        boxes[:, :2] = boxes[:, :2] * scale + shift
        boxes[:, 2:] *= scale
        kps = self.keypoints.copy()
        kps[..., :2] = kps[..., :2] * scale + np.asarray(shift, np.float32)
        return People(boxes, kps)

    @staticmethod
    def concat(parts: list["People"], num_keypoints: int) -> "People":
        if not parts:
            return People(np.zeros((0, 4), np.float32), np.zeros((0, num_keypoints, 3), np.float32))
        return People(np.concatenate([p.boxes for p in parts]), np.concatenate([p.keypoints for p in parts]))


def flip_people(people: People, width: int) -> People:
    """Left-right flip on a canvas `width` wide: x -> width - x, and left/right keypoints trade places."""
    boxes = people.boxes.copy()
    boxes[:, 0] = width - boxes[:, 0] - boxes[:, 2]
    kps = people.keypoints.copy()
    kps[..., 0] = width - kps[..., 0]
    kps[kps[..., 2] <= 0] = 0  # unlabelled keypoints stay (0, 0, 0)
    if kps.shape[1] == NUM_KEYPOINTS:
        kps = kps[:, list(FLIP_PERM)]
    return People(boxes, kps)


def clip_people(people: People, canvas: tuple[int, int], areas_before: np.ndarray) -> tuple[People, np.ndarray]:
    """Clip boxes to the canvas, drop keypoints outside it; also return which boxes stay valid (the reference's
    box_candidates: over 2 px each way, over 10 % of the area before clipping, aspect ratio under 20)."""
    height, width = canvas
    lo = people.boxes[:, :2]
    hi = lo + people.boxes[:, 2:]
    lo = np.clip(lo, 0, [width, height])
    hi = np.clip(hi, 0, [width, height])
    wh = hi - lo
    boxes = np.concatenate([lo, wh], 1).astype(np.float32)
    kps = people.keypoints.copy()
    outside = (kps[..., 0] < 0) | (kps[..., 0] >= width) | (kps[..., 1] < 0) | (kps[..., 1] >= height)
    kps[outside | (kps[..., 2] <= 0)] = 0
    w, h = wh[:, 0], wh[:, 1]
    aspect = np.maximum(w / np.maximum(h, 1e-6), h / np.maximum(w, 1e-6))
    valid = (w > 2) & (h > 2) & (w * h > 0.1 * np.maximum(areas_before, 1e-6)) & (aspect < 20)
    return People(boxes, kps), valid


def augment_hsv(image: np.ndarray, gains: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Random hue, saturation and value gains in 1 +- gain, through lookup tables (in place on BGR uint8)."""
    if not any(gains):
        return image
    r = rng.uniform(-1, 1, 3) * gains + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * r[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


class KapaoDataset(torch.utils.data.Dataset):
    """Samples for KAPAO (num_keypoints 17) or the person detector (num_keypoints 0).

    __getitem__ -> dict: image uint8 [H, W, 3] BGR numpy at input_size, targets float32 [T, 5 + 3K] in input pixels
    (kapao_labels rows), image_id int, and (without augmentation) the letterbox to map predictions back.
    Every random number of a sample comes from sample_rng(seed, epoch, index), so any worker or rank, and a resumed
    run, draws the same sample.
    """

    def __init__(self, data: CocoKeypoints, input_size: tuple[int, int], augment: str = "none",
                 num_keypoints: int = NUM_KEYPOINTS, kp_bbox: float = 0.05, seed: int = 0):
        self.data = data
        self.seed, self.epoch = seed, 0
        self.input_size = tuple(input_size)
        self.policy = augment_policy(augment)
        self.num_keypoints = num_keypoints
        self.labels = KapaoLabels(num_keypoints, kp_bbox)

    def __len__(self) -> int:
        return len(self.data)

    def people(self, image_id: int) -> People:
        anns = self.data.person_annotations(image_id, include_crowd=False)
        boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        kps = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        return People(boxes, kps[:, :self.num_keypoints] if self.num_keypoints else kps[:, :0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _resized(self, index: int) -> tuple[np.ndarray, People]:
        """Image `index` resized so that it fits the input (longest relative side fills it), and its people."""
        image_id = self.data.image_ids[index]
        image = self.data.load_image(image_id)
        people = self.people(image_id)
        in_h, in_w = self.input_size
        ratio = min(in_h / image.shape[0], in_w / image.shape[1])
        if ratio != 1:
            size = (max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio)))
            interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
            scale_x, scale_y = size[0] / image.shape[1], size[1] / image.shape[0]
            image = cv2.resize(image, size, interpolation=interp)
            people = People(people.boxes * [scale_x, scale_y, scale_x, scale_y],
                            people.keypoints * np.asarray([scale_x, scale_y, 1], np.float32))
        return image, people

    def _letterboxed(self, image_id: int):
        """(canvas, people in input pixels, Letterbox) of one image letterboxed to the input size."""
        canvas, box = letterbox(self.data.load_image(image_id), self.input_size)
        people = self.people(image_id)
        sx, sy = box.scale
        people = people.affine(1.0, (0.0, 0.0))  # a copy
        people.boxes[:] = people.boxes * [sx, sy, sx, sy] + [box.pad[0], box.pad[1], 0, 0]
        people.keypoints[..., :2] = box.to_input(people.keypoints[..., :2])
        return canvas, people, box

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, People]:
        """Four images around a random centre of a canvas twice the input size (the reference's load_mosaic)."""
        in_h, in_w = self.input_size
        canvas = np.full((2 * in_h, 2 * in_w, 3), PAD_VALUE, np.uint8)
        cx, cy = int(rng.uniform(in_w / 2, 1.5 * in_w)), int(rng.uniform(in_h / 2, 1.5 * in_h))
        indices = [index, *rng.integers(0, len(self), 3)]
        parts = []
        for quadrant, i in enumerate(indices):
            image, people = self._resized(int(i))
            h, w = image.shape[:2]
            # the image's corner that touches the centre, and the part of it that fits on the canvas
            x0 = cx - w if quadrant in (0, 2) else cx
            y0 = cy - h if quadrant in (0, 1) else cy
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + w, 2 * in_w), min(y0 + h, 2 * in_h)
            canvas[cy0:cy1, cx0:cx1] = image[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            parts.append(people.affine(1.0, (x0, y0)))
        return canvas, People.concat(parts, self.num_keypoints)

    def _random_zoom(self, image: np.ndarray, people: People, rng: np.random.Generator):
        """Scale about the canvas centre by U(1 - scale, 1 + scale) and move that centre to a random point within
        translate of the output's centre; the output is the input size (the reference's random_perspective without
        rotation, shear or perspective, which its COCO recipe sets to 0)."""
        in_h, in_w = self.input_size
        p = self.policy
        s = rng.uniform(1 - p.scale, 1 + p.scale)
        tx = rng.uniform(0.5 - p.translate, 0.5 + p.translate) * in_w
        ty = rng.uniform(0.5 - p.translate, 0.5 + p.translate) * in_h
        shift = (tx - s * image.shape[1] / 2, ty - s * image.shape[0] / 2)
        matrix = np.array([[s, 0, shift[0]], [0, s, shift[1]]], np.float64)
        out = cv2.warpAffine(image, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR,
                             borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
        return out, people.affine(s, shift), s

    def __getitem__(self, index: int) -> dict:
        image_id = self.data.image_ids[index]
        p = self.policy
        if p == AUGMENT_POLICIES["none"]:
            canvas, people, box = self._letterboxed(image_id)
            people, valid = clip_people(people, self.input_size, people.boxes[:, 2] * people.boxes[:, 3])
            targets = self.labels.encode(people.boxes, people.keypoints, self.input_size, valid)
            return {"image": canvas, "targets": targets, "image_id": image_id, "letterbox": box}

        rng = sample_rng(self.seed, self.epoch, index)
        if rng.uniform() < p.mosaic:
            canvas, people = self._mosaic(index, rng)
        else:
            canvas, people, _ = self._letterboxed(image_id)
        areas = people.boxes[:, 2] * people.boxes[:, 3]
        canvas, people, s = self._random_zoom(canvas, people, rng)
        people, valid = clip_people(people, self.input_size, areas * s * s)
        if rng.uniform() < p.fliplr:
            canvas = np.ascontiguousarray(canvas[:, ::-1])
            people = flip_people(people, self.input_size[1])
        canvas = augment_hsv(canvas, p.hsv, rng)
        targets = self.labels.encode(people.boxes, people.keypoints, self.input_size, valid)
        return {"image": canvas, "targets": targets, "image_id": image_id, "letterbox": None}


def collate(samples: list[dict]) -> dict:
    """Stack a batch: images uint8 [N, H, W, 3] BGR, targets [T, 6 + 3K] with the image index in column 0."""
    targets = [np.concatenate([np.full((len(s["targets"]), 1), i, np.float32), s["targets"]], 1)
               for i, s in enumerate(samples)]
    return {
        "images": torch.from_numpy(np.stack([s["image"] for s in samples])),
        "targets": torch.from_numpy(np.concatenate(targets)),
        "image_ids": [s["image_id"] for s in samples],
        "letterboxes": [s["letterbox"] for s in samples],
    }


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] BGR -> float32 [N, 3, H, W] RGB / 255, what the network takes (InputSpec defaults)."""
    return images.flip(-1).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

