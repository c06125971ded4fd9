"""COCO person-keypoint annotations through pycocotools, for the real COCO 2017 files and the built-in set alike.

Layouts understood (root is what the user passes as --data):
    built-in:   root/annotations/person_keypoints_{split}.json      root/images/{split}/
    COCO 2017:  root/annotations/person_keypoints_{split}2017.json  root/{split}2017/  or  root/images/{split}2017/
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from pose_edge.data.image_header import truncated_jpeg
from pose_edge.data.validate import validate_dataset
from pose_edge.errors import DataError, DataWarning

SPLITS = ("train", "val", "video")


def find_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, images folder) of `split` under `root`, in either layout."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    candidates = [
        (root / "annotations" / f"person_keypoints_{split}.json", [root / "images" / split]),
        (root / "annotations" / f"person_keypoints_{split}2017.json",
         [root / f"{split}2017", root / "images" / f"{split}2017"]),
    ]
    for ann_file, image_dirs in candidates:
        if ann_file.is_file():
            for images_dir in image_dirs:
                if images_dir.is_dir():
                    return ann_file, images_dir
            raise DataError(f"{ann_file} exists but none of its image folders does: "
                            f"{', '.join(str(d) for d in image_dirs)}")
    raise DataError(f"no {split} annotations under {root}: expected {candidates[0][0]} (built-in layout, "
                    f"`pose-edge data synth --out {root}` writes it) or {candidates[1][0]} (COCO 2017)")


def load_coco(ann_file: str | Path, images_dir: str | Path | None = None, strict: bool = False, warn: bool = True):
    """A pycocotools COCO object for `ann_file` after the validation pass (pose_edge.data.validate), quiet
    (pycocotools prints progress). images_dir: also check every image's header (size, truncation).

    Bad records are left out with a one-line DataWarning saying what and how many (warn=False: the caller warns);
    with strict=True any bad record is a DataError instead. The report is kept as `coco.validation`.
    """
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    try:
        raw = ann_file.read_bytes()
    except OSError as e:
        raise DataError(f"{ann_file}: cannot read annotation file ({e.strerror})") from None
    try:
        dataset = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{ann_file}: not valid JSON, the file is corrupt or truncated ({e})") from None
    dataset, report = validate_dataset(dataset, ann_file, images_dir)
    if not report.ok:
        if strict:
            raise DataError(f"{report.summary()}; --strict refuses a data set with bad records "
                            f"(`pose-edge data check` lists them)")
        if warn:
            warn_left_out(report, stacklevel=3)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    coco.validation = report
    return coco


def warn_left_out(report, stacklevel: int = 2) -> None:
    warnings.warn(DataWarning(f"{report.summary()}; left out (--strict refuses them)"), stacklevel=stacklevel + 1)


def read_image(path: str | Path) -> np.ndarray:
    """uint8 BGR [H, W, 3]; DataError on a missing, corrupt or empty file."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror})") from None
    if truncated_jpeg(data.tobytes()):
        raise DataError(f"{path}: truncated JPEG (no end marker; OpenCV would fill the missing rows with grey)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image (corrupt, truncated or empty)")
    return image


class CocoKeypoints:
    """One split of a COCO-format person-keypoints data set, validated with its images (load_coco): bad records are
    left out with a warning, or refused with strict=True. require_people: refuse a split without a usable person
    (a training set)."""

    def __init__(self, root: str | Path, split: str, strict: bool = False, require_people: bool = False):
        self.root = Path(root)
        self.split = split
        self.ann_file, self.images_dir = find_split(root, split)
        self.coco = load_coco(self.ann_file, self.images_dir, strict=strict, warn=False)
        self.report = self.coco.validation
        if require_people and self.report.usable_people == 0:
            left_out = "" if self.report.ok else f"; {self.report.summary()}"
            raise DataError(f"{self.ann_file}: no usable person to train on (a person needs a valid box and at least "
                            f"one labelled keypoint){left_out}")
        if not self.report.ok:
            warn_left_out(self.report)
        self.image_ids: list[int] = sorted(self.coco.imgs)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, image_id: int) -> dict:
        return self.coco.imgs[image_id]

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self.coco.imgs[image_id]["file_name"]

    def load_image(self, image_id: int) -> np.ndarray:
        return read_image(self.image_path(image_id))

    def person_annotations(self, image_id: int, include_crowd: bool = False) -> list[dict]:
        anns = self.coco.imgToAnns.get(image_id, [])
        return [a for a in anns if a.get("category_id", 1) == 1 and (include_crowd or not a.get("iscrowd", 0))]
