"""One pass over a COCO person-keypoints file and its images before anything trains on it or is scored against it.

    clean, report = validate_dataset(raw_json_object, ann_file, images_dir)

Every image and annotation record is checked; a bad record is left out of `clean` and counted in the report by what
is wrong with it, with the first few ids as examples. Images are checked from their headers (pose_edge.data.
image_header: size, truncation; no pixel decoding), so a 5,000-image split takes seconds, and a bad file is found
before the first epoch rather than when the loader reaches it.

What makes a record bad (the first problem found is the one reported):
  file      not a JSON object; 'images', 'annotations' or 'categories' not a list; no person category (id 1).
            Raised at once as DataError: nothing in such a file can be trusted.
  image     id not an integer, or used by two records (all of them are left out: which one the annotations mean is
            unknowable); file_name missing or leading outside the image folder; width/height not positive integers;
            with the images folder: the file is missing, unreadable, truncated, or its size as the loader sees it
            differs from the JSON's (annotations would not fit the pixels). Its annotations go with it.
  annotation  id not an integer or used before; image_id not a valid image; category_id not 1 (person: the scorer
            would otherwise count another class as people); iscrowd not 0/1; keypoints not 17 x (x, y, v) finite
            numbers with v in {0, 1, 2}, or a labelled one outside the image; num_keypoints not the number of
            labelled keypoints (pycocotools ignores people with none, so a wrong count changes AP); bbox not four
            finite numbers, empty, or outside the image; area not a finite number >= 0.
Outside the image means beyond it by more than OUTSIDE_SLACK of its size, so rounding at the border is no problem.
Notes (counted, kept): a JPEG whose EXIF orientation is not 1 but whose size still fits (OpenCV turns or mirrors it
when loading; whether the annotations meant the stored or the turned pixels is not in the file).

A usable person is a kept, non-crowd annotation with at least one labelled keypoint and a box of positive area.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from pose_edge.errors import DataError
from pose_edge.keypoints import NUM_KEYPOINTS

PERSON_CATEGORY_ID = 1
OUTSIDE_SLACK = 0.05  # of the image's width / height
EXAMPLES = 5  # ids kept per kind of problem


@dataclass
class Tally:
    """Records of one kind of problem: how many, and the first EXAMPLES of them."""

    count: int = 0
    examples: list = field(default_factory=list)

    def add(self, where) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(where)


@dataclass
class ValidationReport:
    """What the pass found in one annotation file (and its images, when they were checked)."""

    source: str
    images: int = 0
    annotations: int = 0
    images_checked: bool = False
    skipped_images: dict[str, Tally] = field(default_factory=dict)
    skipped_annotations: dict[str, Tally] = field(default_factory=dict)
    notes: dict[str, Tally] = field(default_factory=dict)
    annotations_of_skipped_images: int = 0
    usable_people: int = 0
    seconds: float = 0.0
    skipped_image_ids: set = field(default_factory=set)  # integer ids of the images left out

    @property
    def ok(self) -> bool:
        return not self.skipped_images and not self.skipped_annotations

    def images_skipped(self) -> int:
        return sum(t.count for t in self.skipped_images.values())

    def annotations_skipped(self) -> int:
        return sum(t.count for t in self.skipped_annotations.values()) + self.annotations_of_skipped_images

    def summary(self) -> str:
        """One line: what was left out and why, with examples."""
        if self.ok:
            return f"{self.source}: {self.images} images, {self.annotations} annotations, all valid"
        parts = []
        if self.skipped_images:
            parts.append(f"{self.images_skipped()} of {self.images} images skipped ({_kinds(self.skipped_images)})")
        if self.skipped_annotations or self.annotations_of_skipped_images:
            extra = ([f"{self.annotations_of_skipped_images} on skipped images"]
                     if self.annotations_of_skipped_images else [])
            kinds = ", ".join(filter(None, [_kinds(self.skipped_annotations)] + extra))
            parts.append(f"{self.annotations_skipped()} of {self.annotations} annotations skipped ({kinds})")
        return f"{self.source}: " + "; ".join(parts)

    def lines(self) -> list[str]:
        """The full report, a line per kind of problem (what `pose-edge data check` prints)."""
        out = [f"{self.source}: {self.images} images, {self.annotations} annotations, {self.usable_people} usable "
               f"people; images {'checked from their headers' if self.images_checked else 'not checked'} "
               f"({self.seconds:.1f} s)"]
        for title, tallies in (("image skipped", self.skipped_images), ("annotation skipped", self.skipped_annotations),
                               ("note", self.notes)):
            for kind, t in tallies.items():
                more = f", ... ({t.count - len(t.examples)} more)" if t.count > len(t.examples) else ""
                out.append(f"  {title}: {kind}: {t.count} ({', '.join(map(str, t.examples))}{more})")
        if self.annotations_of_skipped_images:
            out.append(f"  annotation skipped: on a skipped image: {self.annotations_of_skipped_images}")
        return out

    def to_dict(self) -> dict:
        def plain(tallies):
            return {k: {"count": t.count, "examples": t.examples} for k, t in tallies.items()}

        return {"source": self.source, "images": self.images, "annotations": self.annotations,
                "images_checked": self.images_checked, "usable_people": self.usable_people,
                "skipped_images": plain(self.skipped_images), "skipped_annotations": plain(self.skipped_annotations),
                "annotations_of_skipped_images": self.annotations_of_skipped_images, "notes": plain(self.notes),
                "seconds": round(self.seconds, 3)}


def _kinds(tallies: dict[str, Tally]) -> str:
    return ", ".join(f"{t.count} {kind}: {', '.join(map(str, t.examples[:2]))}{', ...' if t.count > 2 else ''}"
                     for kind, t in tallies.items())


def _count(tallies: dict[str, Tally], kind: str, where) -> None:
    tallies.setdefault(kind, Tally()).add(where)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fatal(cond: bool, ann_file, what: str) -> None:
    if not cond:
        raise DataError(f"{ann_file}: malformed COCO keypoints file: {what}")


def validate_dataset(dataset: object, ann_file: str | Path, images_dir: str | Path | None = None
                     ) -> tuple[dict, ValidationReport]:
    """(the data set without its bad records, the report). images_dir: also check every image file's header."""
    start = time.perf_counter()
    _fatal(isinstance(dataset, dict), ann_file, "top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        _fatal(isinstance(dataset.get(key), list), ann_file, f"'{key}' is missing or not a list")
    person = [c for c in dataset["categories"] if isinstance(c, dict) and c.get("id") == PERSON_CATEGORY_ID]
    _fatal(bool(person), ann_file, f"no person category (id {PERSON_CATEGORY_ID}) in 'categories'")
    report = ValidationReport(str(ann_file), len(dataset["images"]), len(dataset["annotations"]),
                              images_checked=images_dir is not None)
    images = _valid_images(dataset["images"], report, Path(images_dir) if images_dir is not None else None)
    sizes = {im["id"]: (im["width"], im["height"]) for im in images}
    skipped_ids = {im["id"] for im in dataset["images"] if isinstance(im, dict) and _is_int(im.get("id"))} - sizes.keys()
    report.skipped_image_ids = skipped_ids
    annotations = []
    seen: set[int] = set()
    for ann in dataset["annotations"]:
        if isinstance(ann, dict) and _is_int(ann.get("image_id")) and ann["image_id"] in skipped_ids:
            report.annotations_of_skipped_images += 1
            continue
        problem = _annotation_problem(ann, seen, sizes)
        if problem:
            _count(report.skipped_annotations, problem, _where("annotation", ann))
            continue
        seen.add(ann["id"])
        annotations.append(ann)
        if (not ann.get("iscrowd", 0) and ann["num_keypoints"] > 0 and ann["bbox"][2] > 0 and ann["bbox"][3] > 0):
            report.usable_people += 1
    report.seconds = time.perf_counter() - start
    clean = {**dataset, "images": images, "annotations": annotations, "categories": person[:1]}
    return clean, report


def _where(what: str, record) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{what} {rid!r}" if rid is not None else f"{what} {str(record)[:40]!r}"


def _valid_images(records: list, report: ValidationReport, images_dir: Path | None) -> list[dict]:
    ids = [r.get("id") if isinstance(r, dict) and _is_int(r.get("id")) else None for r in records]
    counts: dict[int, int] = {}
    for i in ids:
        if i is not None:
            counts[i] = counts.get(i, 0) + 1
    kept = []
    for record, rid in zip(records, ids):
        where = _where("image", record)
        if rid is None:
            _count(report.skipped_images, "id not an integer", where)
            continue
        if counts[rid] > 1:
            _count(report.skipped_images, "duplicate image id", where)
            continue
        problem = _image_record_problem(record)
        if problem is None and images_dir is not None:
            problem = _image_file_problem(record, images_dir, report)
        if problem:
            _count(report.skipped_images, problem, f"{where} ({record.get('file_name')})"
                   if isinstance(record.get("file_name"), str) else where)
            continue
        kept.append(record)
    return kept


def _image_record_problem(im: dict) -> str | None:
    name = im.get("file_name")
    if not isinstance(name, str) or not name:
        return "no file_name"
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or "\\" in name:
        return "file name outside the image folder"
    w, h = im.get("width"), im.get("height")
    if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
        return "width/height not positive integers"
    return None


def _image_file_problem(im: dict, images_dir: Path, report: ValidationReport) -> str | None:
    from pose_edge.data.image_header import read_header

    path = images_dir / im["file_name"]
    if not path.is_file():
        return "missing image file"
    try:
        header = read_header(path)
    except DataError:
        return "unreadable image file"
    if not header.complete:
        return "truncated image file"
    if (header.width, header.height) != (im["width"], im["height"]):
        turned = f", EXIF orientation {header.orientation}" if header.orientation != 1 else ""
        return f"size differs from the JSON's (loads as {header.width}x{header.height}{turned})"
    if header.orientation != 1:
        _count(report.notes, "EXIF orientation not 1 (OpenCV turns or mirrors the pixels when loading)",
               f"image {im['id']} ({im['file_name']})")
    return None


def _inside(x: float, y: float, size: tuple[int, int]) -> bool:
    w, h = size
    return -OUTSIDE_SLACK * w <= x <= (1 + OUTSIDE_SLACK) * w and -OUTSIDE_SLACK * h <= y <= (1 + OUTSIDE_SLACK) * h


def _annotation_problem(ann, seen: set[int], sizes: dict[int, tuple[int, int]]) -> str | None:
    """The first thing wrong with one annotation record, or None."""
    if not isinstance(ann, dict) or not _is_int(ann.get("id")):
        return "id not an integer"
    if ann["id"] in seen:
        return "duplicate annotation id"
    image_id = ann.get("image_id")
    if not _is_int(image_id) or image_id not in sizes:
        return "unknown image_id"
    if "category_id" not in ann:
        return "no category_id"
    if ann["category_id"] != PERSON_CATEGORY_ID:
        return "category not person"
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd", 0), bool):
        return "iscrowd not 0 or 1"
    size = sizes[image_id]
    kps = ann.get("keypoints")
    if not isinstance(kps, list) or len(kps) != 3 * NUM_KEYPOINTS or not all(_is_number(v) for v in kps):
        return f"keypoints not {3 * NUM_KEYPOINTS} numbers"
    if not all(math.isfinite(v) for v in kps):
        return "non-finite keypoints"
    labelled = 0
    for x, y, v in zip(kps[0::3], kps[1::3], kps[2::3]):
        if v not in (0, 1, 2):
            return "keypoint visibility not 0, 1 or 2"
        if v > 0:
            labelled += 1
            if not _inside(x, y, size):
                return "keypoint outside the image"
    if not _is_int(ann.get("num_keypoints")):
        return "no integer num_keypoints"
    if ann["num_keypoints"] != labelled:
        return "num_keypoints disagrees with the keypoints"
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        return "bbox not 4 numbers"
    if not all(math.isfinite(v) for v in box):
        return "non-finite bbox"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return "empty or negative bbox"
    if not (_inside(x, y, size) and _inside(x + w, y + h, size)):
        return "bbox outside the image"
    area = ann.get("area")
    if not _is_number(area) or not math.isfinite(area) or area < 0:
        return "area not a finite number >= 0"
    return None
