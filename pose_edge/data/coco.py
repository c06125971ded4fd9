"""COCO person-keypoint annotations through pycocotools, for the real COCO 2017 files and the built-in set alike.

Layouts understood (root is what the user passes as --data):
    built-in:   root/annotations/person_keypoints_{split}.json      root/images/{split}/
    COCO 2017:  root/annotations/person_keypoints_{split}2017.json  root/{split}2017/  or  root/images/{split}2017/
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from pose_edge.errors import DataError
from pose_edge.keypoints import NUM_KEYPOINTS

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


def _check(cond: bool, ann_file: Path, what: str) -> None:
    if not cond:
        raise DataError(f"{ann_file}: malformed COCO keypoints file: {what}")


def validate_keypoints_dataset(dataset: object, ann_file: Path) -> None:
    """Raise DataError naming the file and the first problem found; pycocotools itself would fail deep inside."""
    _check(isinstance(dataset, dict), ann_file, "top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        _check(isinstance(dataset.get(key), list), ann_file, f"'{key}' is missing or not a list")
    image_ids = set()
    for im in dataset["images"]:
        _check(isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str),
               ann_file, f"image record without an integer 'id' and a 'file_name': {str(im)[:80]}")
        image_ids.add(im["id"])
    for ann in dataset["annotations"]:
        _check(isinstance(ann, dict) and isinstance(ann.get("id"), int), ann_file,
               f"annotation without an integer 'id': {str(ann)[:80]}")
        _check(ann.get("image_id") in image_ids, ann_file,
               f"annotation {ann['id']} refers to unknown image {ann.get('image_id')!r}")
        kps = ann.get("keypoints")
        _check(isinstance(kps, list) and len(kps) == 3 * NUM_KEYPOINTS, ann_file,
               f"annotation {ann['id']} needs 'keypoints' as {3 * NUM_KEYPOINTS} numbers")
        _check(all(isinstance(v, (int, float)) for v in kps) and np.isfinite(kps).all(), ann_file,
               f"annotation {ann['id']} has non-numeric or non-finite keypoints")
        bbox = ann.get("bbox")
        _check(isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox),
               ann_file, f"annotation {ann['id']} needs 'bbox' as [x, y, w, h]")
        _check(isinstance(ann.get("area"), (int, float)), ann_file, f"annotation {ann['id']} has no numeric 'area'")


def load_coco(ann_file: str | Path):
    """A pycocotools COCO object for `ann_file`, after validation; quiet (pycocotools prints progress)."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    try:
        raw = ann_file.read_bytes()
    except OSError as e:
        raise DataError(f"{ann_file}: cannot read annotation file ({e.strerror})") from None
    try:
        dataset = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file}: not valid JSON, the file is corrupt or truncated ({e})") from None
    validate_keypoints_dataset(dataset, ann_file)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_image(path: str | Path) -> np.ndarray:
    """uint8 BGR [H, W, 3]; DataError on a missing, corrupt or empty file."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image (corrupt, truncated or empty)")
    return image


class CocoKeypoints:
    """One split of a COCO-format person-keypoints data set."""

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        self.split = split
        self.ann_file, self.images_dir = find_split(root, split)
        self.coco = load_coco(self.ann_file)
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
