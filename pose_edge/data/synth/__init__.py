"""The built-in synthetic COCO-keypoints data set: the project's embedded default.

Articulated 3-D stick people (plausible proportions, joint limits, faces that show which way they look) are posed
standing, walking, sitting, with arms raised or lying, drawn far to near over textured backgrounds, and annotated
from the drawing itself. The result is what pycocotools loads unchanged:

    OUT/images/{train,val}/<12-digit id>.jpg
    OUT/annotations/person_keypoints_{train,val}.json
    OUT/images/video/*.jpg, OUT/annotations/person_keypoints_video.json, OUT/video.mp4   (with --video)

Every image is a pure function of (seed, split, index), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from pose_edge.data.synth.scene import MAX_FIGURES, annotate, finish_image, render_scene, sample_scene
from pose_edge.data.synth.video import write_video
from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import atomic_write_bytes, atomic_write_json
from pose_edge.keypoints import PERSON_CATEGORY

_SPLIT_CODE = {"train": 1, "val": 2, "video": 3}
_ID_OFFSET = {"train": 0, "val": 1_000_000, "video": 2_000_000}
JPEG_QUALITY = 92
MIN_SIZE, MAX_SIZE = 32, 8192  # pixels a side

__all__ = ["write_dataset", "format_stats", "render_image", "image_rng", "write_video"]


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], index])


def image_id(split: str, index: int) -> int:
    return _ID_OFFSET[split] + index + 1


def render_image(seed: int, split: str, index: int, size: tuple[int, int]):
    """(final image uint8 BGR, COCO annotations, scene) of image `index` of `split`."""
    width, height = size
    scene = sample_scene(image_rng(seed, split, index), width, height)
    clean, owner = render_scene(scene)
    return finish_image(clean, scene), annotate(scene, owner, image_id(split, index)), scene


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def coco_file(images: list[dict], annotations: list[dict], description: str) -> dict:
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [PERSON_CATEGORY],
    }


def _write_split(out: Path, split: str, count: int, seed: int, size: tuple[int, int], progress: bool) -> dict:
    images, annotations = [], []
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    indices = range(count)
    bar = None
    if progress and count:
        import click

        bar = click.progressbar(indices, label=f"{split:>5}", show_pos=True, file=None)
        indices = bar.__enter__()
    try:
        for index in indices:
            image, anns, _ = render_image(seed, split, index, size)
            iid = image_id(split, index)
            file_name = f"{iid:012d}.jpg"
            atomic_write_bytes(image_dir / file_name, encode_jpeg(image))
            images.append({"id": iid, "file_name": file_name, "width": size[0], "height": size[1]})
            annotations.extend(anns)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    # The annotation file is written last: a data set without it is visibly incomplete, never silently partial.
    atomic_write_json(out / "annotations" / f"person_keypoints_{split}.json",
                      coco_file(images, annotations, f"pose-edge synthetic people, split {split}, seed {seed}"))
    return split_stats(images, annotations)


def split_stats(images: list[dict], annotations: list[dict]) -> dict:
    v = np.array([a["keypoints"][2::3] for a in annotations], dtype=np.int64).reshape(-1, 17)
    people_in = Counter(a["image_id"] for a in annotations)
    images_with = Counter(people_in.get(im["id"], 0) for im in images)
    heights = np.array([a["bbox"][3] for a in annotations]) if annotations else np.zeros(1)
    labelled = max(int(v.size), 1)
    return {
        "images": len(images),
        "people": len(annotations),
        "people_per_image": {str(k): images_with.get(k, 0) for k in range(MAX_FIGURES + 1)},
        "keypoints_visible": round(float((v == 2).sum()) / labelled, 3),
        "keypoints_occluded": round(float((v == 1).sum()) / labelled, 3),
        "keypoints_unlabelled": round(float((v == 0).sum()) / labelled, 3),
        "person_height_px": {"min": round(float(heights.min()), 1), "median": round(float(np.median(heights)), 1),
                             "max": round(float(heights.max()), 1)},
    }


def write_dataset(out: str | Path, num_train: int = 1000, num_val: int = 200, seed: int = 0,
                  size: tuple[int, int] = (640, 480), video_frames: int | None = None,
                  progress: bool = True) -> dict:
    """Write the data set to `out` and return its statistics (see format_stats). PoseEdgeError for a size outside
    MIN_SIZE..MAX_SIZE pixels a side (below it the figures cannot be drawn; above it one image would not fit in
    memory sensibly)."""
    width, height = size
    if not (MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE):
        raise PoseEdgeError(f"image size {width}x{height}: each side must lie between {MIN_SIZE} and {MAX_SIZE} "
                            "pixels")
    out = Path(out)
    start = time.perf_counter()
    stats: dict = {"seed": seed, "size": list(size), "out": str(out)}
    for split, count in (("train", num_train), ("val", num_val)):
        stats[split] = _write_split(out, split, count, seed, size, progress)
    if video_frames:
        stats["video"] = write_video(out, video_frames, seed, size)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    return stats


def format_stats(stats: dict) -> str:
    lines = [f"wrote {stats['out']} (seed {stats['seed']}, {stats['size'][0]}x{stats['size'][1]}) "
             f"in {stats['seconds']:.1f} s"]
    for split in ("train", "val", "video"):
        if split not in stats:
            continue
        s = stats[split]
        if not s["images"]:
            continue
        hist = " ".join(f"{k}:{c}" for k, c in s["people_per_image"].items())
        h = s["person_height_px"]
        lines.append(
            f"  {split:>5}: {s['images']} images, {s['people']} people (per image {hist}); keypoints visible "
            f"{s['keypoints_visible']:.0%}, occluded {s['keypoints_occluded']:.0%}, unlabelled "
            f"{s['keypoints_unlabelled']:.0%}; person height px min {h['min']:.0f} median {h['median']:.0f} "
            f"max {h['max']:.0f}")
    return "\n".join(lines)
