"""COCO AP of a Backend on a data set through the model's own runtime pipeline, for the FP32 / FP16 / INT8 table.

    simple_baseline   pose_edge.runtime.topdown: ground-truth person boxes -> crops -> heatmaps -> poses (keypoint AP)
    kapao             pose_edge.runtime.kapao_pipeline: letterbox -> grids -> decode + NMS + fusion (keypoint AP)
    person_detector   pose_edge.runtime.detector: person boxes (box AP, pycocotools iouType "bbox")

No test-time augmentation, so that the table compares the graphs and nothing else.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pose_edge.export.progress import progress_bar


def _kapao_results(backend, data, advance) -> list[dict]:
    from pose_edge.runtime.kapao_pipeline import KapaoPipeline

    pipeline = KapaoPipeline(backend)
    results = []
    for image_id in data.image_ids:
        det = pipeline.predict(data.load_image(image_id))
        for kp, score in zip(det.keypoints, det.scores):
            results.append({"image_id": int(image_id), "category_id": 1,
                            "keypoints": [round(float(v), 3) for v in np.asarray(kp).reshape(-1)],
                            "score": float(score)})
        advance(1)
    return results


def _box_ap(backend, data, advance) -> dict[str, float]:
    from pycocotools.cocoeval import COCOeval

    from pose_edge.evaluate.scoring import STAT_NAMES
    from pose_edge.runtime.detector import PersonDetector

    detector = PersonDetector(backend, conf_thres=0.001, max_det=100)
    results = []
    for image_id in data.image_ids:
        boxes, scores = detector(data.load_image(image_id))
        results += [{"image_id": int(image_id), "category_id": 1, "bbox": [round(float(v), 2) for v in b],
                     "score": float(s)} for b, s in zip(boxes, scores)]
        advance(1)
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(data.coco, data.coco.loadRes(results), "bbox")
        evaluator.params.imgIds = sorted(data.coco.imgs)
        evaluator.params.catIds = [1]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # bbox stats: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
    s = [max(float(v), 0.0) for v in evaluator.stats]
    return {"AP": s[0], "AP50": s[1], "AP75": s[2], "APm": s[4], "APl": s[5], "AR": s[8], "AR50": 0.0,
            "AR75": 0.0, "ARm": s[10], "ARl": s[11]}


def evaluate_backend(backend, data_dir, split: str = "val", progress: bool = True, label: str = "") -> dict:
    """COCO statistics (AP, AP50, ... as pose_edge.evaluate names them) of `backend` on `data_dir`'s split."""
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.evaluate.scoring import evaluate_keypoints

    data = CocoKeypoints(data_dir, split)
    family = backend.meta.family
    with progress_bar(f"evaluating {label or backend.meta.preset}", len(data.image_ids), enabled=progress) as advance:
        if family == "person_detector":
            return _box_ap(backend, data, advance)
        if family == "kapao":
            results = _kapao_results(backend, data, advance)
        else:
            from pose_edge.runtime import topdown

            pipeline = topdown.TopDownPipeline(backend)
            results = topdown.predict_dataset(pipeline, data, topdown.GroundTruthBoxes(data.coco),
                                              progress=lambda done, total: advance(1))
    return evaluate_keypoints(data.coco, results)


def format_table(rows: dict[str, dict]) -> str:
    """{"fp32": stats, "int8": stats, ...} -> a small aligned table of AP, AP50, AP75, AR and the AP change."""
    names = ("AP", "AP50", "AP75", "AR")
    base = rows.get("fp32", {}).get("AP")
    lines = ["precision  " + "  ".join(f"{n:>6}" for n in names) + "   dAP(pts)"]
    for precision, stats in rows.items():
        delta = "" if base is None or precision == "fp32" else f"{100 * (stats['AP'] - base):+9.2f}"
        lines.append(f"{precision:<9}  " + "  ".join(f"{stats[n]:6.3f}" for n in names) + f"  {delta}")
    return "\n".join(lines)
