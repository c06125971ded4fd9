"""The one evaluation path: a model on a data split -> COCO results -> pycocotools statistics.

`pose-edge eval`, the evaluation during training, `pose-edge export --val` and `pose-edge bench` all call
evaluate_split, so every verb scores the same artefact the same way: the runtime's Estimator (the code a robot runs)
with the COCO evaluation settings (pose_edge.runtime.settings.COCO_EVAL), then pycocotools.

What is scored, by the model's family:
    simple_baseline   keypoint AP/AR of the top-down pipeline on person boxes: the ground truth ("gt"), a COCO
                      detections file, or a person-detector backend (then the detector runs with COCO_EVAL's
                      detector thresholds);
    kapao             keypoint AP/AR, plus box_AP, box_AP50 and box_R50 of its pose objects' boxes;
    person_detector   person-box AP/AR (pycocotools bbox) and R50, the recall at IoU 0.5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pose_edge.estimator import Estimator
from pose_edge.evaluate.boxes import box_source
from pose_edge.evaluate.scoring import evaluate_boxes, evaluate_keypoints, restricted_gt
from pose_edge.runtime.settings import COCO_EVAL, Settings


@dataclasses.dataclass
class SplitResults:
    """What a model predicted on a split: COCO keypoint and box results, and the images they cover."""

    keypoints: list[dict]
    boxes: list[dict]
    image_ids: list[int]


def predict_split(estimator: Estimator, data, boxes="gt", image_ids: Sequence[int] | None = None,
                  batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> SplitResults:
    """Run `estimator` over the images of `data` (a pose_edge.data.coco.CocoKeypoints split, or anything with
    image_ids, load_image(id) and coco). A top-down estimator without a detector takes its boxes from `boxes`
    ("gt" or a detections .json). progress(done, total) after every batch."""
    image_ids = list(data.image_ids if image_ids is None else image_ids)
    source = None
    if estimator.paradigm == "top_down" and estimator.box_pipeline is None:
        source = box_source(boxes, data.coco)
    keypoint_results, box_results = [], []
    for start in range(0, len(image_ids), batch_size):
        ids = image_ids[start:start + batch_size]
        frames = [data.load_image(i) for i in ids]
        if source is not None:
            given = [source.boxes_for(i) for i in ids]
            poses = estimator.predict_batch(frames, [b for b, _ in given], [s for _, s in given])
        else:
            poses = estimator.predict_batch(frames)
        for image_id, p in zip(ids, poses):
            keypoint_results += p.to_coco(image_id)
            box_results += p.to_coco_boxes(image_id)
        if progress is not None:
            progress(min(start + batch_size, len(image_ids)), len(image_ids))
    return SplitResults(keypoint_results, box_results, image_ids)


def evaluate_split(backend, data, *, boxes="gt", settings: Settings = COCO_EVAL, flip: bool | None = None,
                   refine: str | None = None, max_images: int | None = None, batch_size: int = 8,
                   progress: Callable[[int, int], None] | None = None, results: list | None = None) -> dict:
    """COCO statistics of `backend` (any runtime backend: ONNX Runtime, TensorRT, PyTorch) on `data`.

    boxes: for a top-down model, "gt", a detections .json, or a person-detector backend. settings: COCO_EVAL, or
    e.g. PAPER to score imported weights as their paper did. flip: test-time flip (default the settings'). refine:
    heatmap refinement (default the settings'). max_images: the first this many images only (the ground truth
    restricted to them). results: if a list is given, the predictions are appended to it (keypoint results; box
    results for a detector), e.g. to write them to a file.
    """
    if flip is not None:
        settings = dataclasses.replace(settings, flip=flip)
    if refine is not None:
        settings = dataclasses.replace(settings, topdown=dataclasses.replace(settings.topdown, refine=refine))
    detector = boxes if hasattr(boxes, "run") else None
    estimator = Estimator(backend, detector, settings)
    image_ids = data.image_ids[:max_images] if max_images else data.image_ids
    predicted = predict_split(estimator, data, boxes, image_ids, batch_size, progress)
    gt = restricted_gt(data.coco, image_ids)
    family = backend.meta.family
    if results is not None:
        results += predicted.boxes if family == "person_detector" else predicted.keypoints
    if family == "person_detector":
        return evaluate_boxes(gt, predicted.boxes)
    stats = evaluate_keypoints(gt, predicted.keypoints)
    if family == "kapao":  # how well its pose objects find people, beside where it puts their keypoints
        box_stats = evaluate_boxes(gt, predicted.boxes)
        stats.update({f"box_{name}": box_stats[name] for name in ("AP", "AP50", "R50")})
    return stats
