"""COCO keypoint evaluation through pycocotools' COCOeval (iouType 'keypoints'), and COCO results files.

The ten numbers are pycocotools' own, by name: AP, AP50, AP75, APm, APl (average precision over OKS thresholds
0.50:0.05:0.95, at 0.5, at 0.75, for medium and large people) and the same five for average recall, all at maxDets 20.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path


from pose_edge.errors import DataError, DataWarning
from pose_edge.fsutil import atomic_write_json
from pose_edge.keypoints import NUM_KEYPOINTS

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
PERSON_CATEGORY_ID = 1


def write_results(path: str | Path, results: list[dict]) -> None:
    atomic_write_json(path, results)


def read_results(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        results = json.loads(path.read_bytes())
    except OSError as e:
        raise DataError(f"{path}: cannot read results file ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{path}: not valid JSON, the file is corrupt or truncated ({e})") from None
    if not isinstance(results, list):
        raise DataError(f"{path}: a COCO results file is a JSON list of detections")
    return results


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_results(results: list, gt_image_ids: set[int], strict: bool = False, source: str = "results",
                     skipped_image_ids: set[int] = frozenset()) -> list[dict]:
    """The keypoint results to score, each with category_id 1.

    A malformed result (not an object; image_id not an integer of the ground truth; keypoints not 51 finite numbers;
    score not a finite number) is a DataError: the file is broken. A result of another category (category_id not 1)
    is not a person: it is left out with a DataWarning (counted), or refused with strict=True; without a
    category_id a result is a person, as COCO results of a keypoint task are. Results on images that the data set's
    validation left out (skipped_image_ids) are left out too, with a warning.
    """
    kept, other, on_skipped = [], [], 0
    for r in results:
        if not isinstance(r, dict) or not {"image_id", "keypoints", "score"} <= r.keys():
            raise DataError(f"{source}: a result needs image_id, keypoints and score: {repr(r)[:80]}")
        image_id = r["image_id"]
        if isinstance(image_id, int) and image_id in skipped_image_ids:
            on_skipped += 1
            continue
        if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id not in gt_image_ids:
            raise DataError(f"{source}: result for image {repr(image_id)[:40]}, which the ground truth does not "
                            "contain")
        kps = r["keypoints"]
        if (not isinstance(kps, list) or len(kps) != 3 * NUM_KEYPOINTS or not all(_number(v) for v in kps)
                or not _number(r["score"])):
            raise DataError(f"{source}: result for image {image_id} needs {3 * NUM_KEYPOINTS} finite keypoint "
                            "values and a finite score")
        category = r.get("category_id", PERSON_CATEGORY_ID)
        if category != PERSON_CATEGORY_ID or isinstance(category, bool):
            other.append(category)
            continue
        kept.append(dict(r, category_id=PERSON_CATEGORY_ID))
    if other:
        what = (f"{source}: {len(other)} of {len(results)} results are not people (category_id "
                f"{', '.join(sorted({str(c)[:20] for c in other})[:5])}, not {PERSON_CATEGORY_ID})")
        if strict:
            raise DataError(f"{what}; --strict refuses them")
        warnings.warn(DataWarning(f"{what}; left out of the keypoint AP"), stacklevel=3)
    if on_skipped:
        warnings.warn(DataWarning(f"{source}: {on_skipped} results on images the ground truth's validation left out; "
                                  "not scored"), stacklevel=3)
    return kept


def evaluate_keypoints(gt, results, strict: bool = False, source: str | None = None) -> dict[str, float]:
    """COCO keypoint AP/AR of `results` against `gt`.

    gt: an annotation-file path or a pycocotools COCO object; results: a list of COCO result dicts or the path of a
    results JSON, checked by validate_results (strict: refuse results of another category instead of leaving them
    out). source: what to call the results in messages (default: the path, or "results"). Every image of the ground
    truth is evaluated; no results at all scores zero.
    """
    from pycocotools.cocoeval import COCOeval

    from pose_edge.data.coco import load_coco

    coco_gt = load_coco(gt, strict=strict) if isinstance(gt, (str, Path)) else gt
    source = source or (str(results) if isinstance(results, (str, Path)) else "results")
    if isinstance(results, (str, Path)):
        results = read_results(results)
    skipped = getattr(getattr(coco_gt, "validation", None), "skipped_image_ids", frozenset())
    results = validate_results(results, set(coco_gt.imgs), strict, source, skipped)
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.imgIds = sorted(coco_gt.imgs)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where a category has no ground truth at all; that is a zero for our purposes.
    return {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, evaluator.stats)}


def ground_truth_as_results(coco_gt) -> list[dict]:
    """Every labelled, non-crowd person of `coco_gt` as a perfect prediction (score 1): scores AP 1.0."""
    return [
        {"image_id": a["image_id"], "category_id": PERSON_CATEGORY_ID, "keypoints": list(a["keypoints"]),
         "score": 1.0}
        for a in coco_gt.dataset["annotations"]
        if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0
    ]


def format_stats(stats: dict[str, float]) -> str:
    """The ten keypoint statistics on one line, then a KAPAO model's pose-object box statistics if present."""
    line = "  ".join(f"{name} {stats[name]:.3f}" for name in STAT_NAMES)
    extra = [f"{name} {stats[name]:.3f}" for name in ("box_AP", "box_AP50", "box_R50") if name in stats]
    return line + ("  |  " + "  ".join(extra) if extra else "")


BOX_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm", "ARl")


def evaluate_boxes(gt, results: list[dict]) -> dict[str, float]:
    """COCO person-box AP/AR (pycocotools COCOeval, iouType 'bbox', the person category) of box `results` against
    `gt` (path or COCO), by name (BOX_STAT_NAMES), plus R50: the recall at IoU 0.5 with up to 100 boxes per image."""
    from pycocotools.cocoeval import COCOeval

    from pose_edge.data.coco import load_coco

    coco_gt = load_coco(gt) if isinstance(gt, (str, Path)) else gt
    if not results:
        return {**{name: 0.0 for name in BOX_STAT_NAMES}, "R50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.params.imgIds = sorted(coco_gt.imgs)
        evaluator.params.catIds = [PERSON_CATEGORY_ID]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: max(float(v), 0.0) for name, v in zip(BOX_STAT_NAMES, evaluator.stats)}
    stats["R50"] = max(float(evaluator.eval["recall"][0, 0, 0, -1]), 0.0)  # IoU 0.5, all areas, 100 boxes
    return stats


def format_box_stats(stats: dict[str, float]) -> str:
    return "box " + "  ".join(f"{name} {stats[name]:.3f}" for name in ("AP", "AP50", "AP75", "APm", "APl", "AR",
                                                                         "R50"))


def restricted_gt(coco_gt, image_ids):
    """The ground truth of only `image_ids` (coco_gt itself when that is every image), so that evaluating on the
    first few images of a split does not count the people of the others as missed."""
    if len(image_ids) == len(coco_gt.imgs):
        return coco_gt
    from pycocotools.coco import COCO

    keep = set(image_ids)
    sub = COCO()
    sub.dataset = {**coco_gt.dataset, "images": [im for im in coco_gt.dataset["images"] if im["id"] in keep],
                   "annotations": [a for a in coco_gt.dataset["annotations"] if a["image_id"] in keep]}
    with contextlib.redirect_stdout(io.StringIO()):
        sub.createIndex()
    return sub
