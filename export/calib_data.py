"""Calibration images: real pictures prepared exactly as the runtime prepares them for the network.

A source is a data-set folder (built-in layout or COCO 2017: person crops come from its annotations), a COCO keypoints
annotation file (its images are found beside it, as pose_edge.data.coco lays them out), or a plain folder of images.

    simple_baseline           person crops: each annotated person's box warped to the input size by the top-down
                              pipeline's transform (aspect fixed, 1.25 padding);
                              from a plain folder, the whole image letterboxed (no boxes to crop).
    kapao, person_detector    the whole image letterboxed to the input size (the KAPAO pipeline's transform).

Images are taken in a seeded random order, so that a few hundred of them cover the set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from pose_edge.errors import DataError
from pose_edge.geometry import letterbox
from pose_edge.model_meta import ModelMeta

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEFAULT_COUNT = 300


def crop_person(image: np.ndarray, box_xywh, size_hw: tuple[int, int], convention: str = "pose_edge") -> np.ndarray:
    """uint8 [H, W, 3] image, person box (x, y, w, h) in image pixels -> uint8 [h, w, 3] crop at the input size, by
    the top-down pipeline's own transform in the model's convention (pose_edge.geometry: aspect fixed, 1.25
    padding)."""
    from pose_edge.geometry import box_to_center_size, crop_affine, warp_crops

    box = np.asarray(box_xywh, np.float64)[None]
    center, size = box_to_center_size(box, size_hw[1] / size_hw[0], convention=convention)
    return warp_crops(image, crop_affine(center, size, size_hw, convention=convention), size_hw)[0]


def _coco_split(path: Path) -> tuple[Path, str] | None:
    """(data root, split) for a data-set folder or a COCO keypoints annotation file; None for a plain folder."""
    if path.is_file():
        m = re.fullmatch(r"person_keypoints_(\w+?)(2017)?\.json", path.name)
        if not m or path.parent.name != "annotations":
            raise DataError(f"{path}: expected a COCO keypoints file named annotations/person_keypoints_<split>.json "
                            "inside a data-set folder (its images are found from there)")
        return path.parent.parent, m.group(1)
    for split in ("train", "val"):
        for name in (f"person_keypoints_{split}.json", f"person_keypoints_{split}2017.json"):
            if (path / "annotations" / name).is_file():
                return path, split
    return None


def calibration_images(source: str | Path, meta: ModelMeta, count: int = DEFAULT_COUNT, seed: int = 0
                       ) -> Iterator[np.ndarray]:
    """Yield up to `count` uint8 [H, W, 3] BGR images at meta's input size, prepared as the runtime prepares them."""
    from pose_edge.data.coco import CocoKeypoints, read_image

    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such calibration folder or annotation file")
    size = (meta.input.height, meta.input.width)
    rng = np.random.default_rng(seed)
    coco = _coco_split(source)
    if coco is None:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{source}: no images (.jpg, .png, ...) to calibrate on")
        for i in rng.permutation(len(files))[:count]:
            yield letterbox(read_image(files[i]), size)[0]
        return
    data = CocoKeypoints(*coco)
    ids = [data.image_ids[i] for i in rng.permutation(len(data.image_ids))]
    if not ids:
        raise DataError(f"{data.ann_file}: no images to calibrate on")
    produced = 0
    for image_id in ids:
        image = data.load_image(image_id)
        if meta.family == "simple_baseline":
            for ann in data.person_annotations(image_id):
                if ann.get("num_keypoints", 1) > 0 and ann["bbox"][2] > 1 and ann["bbox"][3] > 1:
                    yield crop_person(image, ann["bbox"], size, meta.convention)
                    produced += 1
                    if produced >= count:
                        return
        else:
            yield letterbox(image, size)[0]
            produced += 1
        if produced >= count:
            return


def batches(images: Iterator[np.ndarray], batch: int) -> Iterator[np.ndarray]:
    """Group images into uint8 [B, H, W, 3] batches (the last one may be smaller)."""
    chunk = []
    for image in images:
        chunk.append(image)
        if len(chunk) == batch:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)
