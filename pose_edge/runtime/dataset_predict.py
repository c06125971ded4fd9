"""COCO keypoint results of any Backend over a data-set split: what `pose-edge eval` scores. Torch-free.

The model family (backend.meta.family) picks the pipeline: KAPAO models run single-stage (pose_edge.runtime.
kapao_pipeline, the reference's COCO thresholds); heatmap models (simple_baseline) run top-down on boxes
from a box source: "gt" (the split's annotations), a COCO detections .json, or a person-detector artefact (a run
folder, checkpoint, .onnx or engine of the person_detector family).
"""

from __future__ import annotations

from pose_edge.errors import PoseEdgeError


def box_source(boxes, coco, device: str | None = None):
    """"gt", a detections .json, a person-detector artefact path, or a box source/callable -> a box source."""
    from pose_edge.runtime.topdown import source_for

    if isinstance(boxes, str) and boxes != "gt" and not boxes.endswith(".json"):
        from pose_edge.artifacts import open_artifact
        from pose_edge.runtime.detector import PersonDetector

        return PersonDetector(open_artifact(boxes, device))
    return source_for(boxes, coco)


def predict_split(backend, data, *, boxes="gt", flip: bool = False, refine: str = "dark", device: str | None = None,
                  progress=None) -> list[dict]:
    """Results for every image of `data` (a pose_edge.data.coco.CocoKeypoints split). progress(done, total)."""
    family = backend.meta.family
    if family == "simple_baseline":
        from pose_edge.runtime.topdown import TopDownPipeline, predict_dataset

        pipeline = TopDownPipeline(backend, flip=flip, refine=refine)
        return predict_dataset(pipeline, data, box_source(boxes, data.coco, device), progress)
    if family == "kapao":
        from pose_edge.runtime.kapao_pipeline import KapaoPipeline, predict_dataset

        return predict_dataset(KapaoPipeline(backend, flip=flip), data, progress)[0]
    raise PoseEdgeError(f"evaluating {family} models on a data set is not supported here")
