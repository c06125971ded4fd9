"""ARTIFACT strings -> what a benchmark configuration runs.

    MODEL        an .onnx, an engine or a run folder / checkpoint (pose_edge.artifacts.open_artifact): a single-stage
                 model (KAPAO), a person detector, or a top-down model on the frames' own person boxes
    POSE+DET     a top-down model and the person detector in front of it, e.g. sb-r18-int8.onnx+det-tiny-int8.onnx:
                 each pair names its own detector, so precisions and sizes pair as the user means them
A string that is an existing path is a path, even if it contains "+".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pose_edge.artifacts import open_artifact
from pose_edge.errors import PoseEdgeError

RUNTIME_NAMES = {"OrtBackend": "ORT", "TrtBackend": "TRT", "TorchBackend": "torch"}


@dataclass(frozen=True)
class Spec:
    model: str
    detector: str | None = None


def parse_spec(text: str) -> Spec:
    if Path(text).exists() or "+" not in text:
        return Spec(text)
    parts = text.split("+")
    if len(parts) != 2 or not all(parts):
        raise PoseEdgeError(f"{text!r}: expected MODEL or POSE+DET (one top-down model and its person detector)")
    return Spec(parts[0], parts[1])


def runtime_name(backend) -> str:
    """ORT-CPU, ORT-CUDA, TRT (full TensorRT), TRT-RTX, torch."""
    kind = RUNTIME_NAMES.get(type(backend).__name__, type(backend).__name__)
    if kind == "ORT":
        providers = getattr(backend, "providers", ()) or ("CPUExecutionProvider",)
        return "ORT-CUDA" if providers[0] == "CUDAExecutionProvider" else "ORT-CPU"
    if kind == "TRT" and getattr(backend.sidecar, "trt_module", "") == "tensorrt_rtx":
        return "TRT-RTX"
    return kind


def precision(backend) -> str:
    """fp32, fp16, int8 (the TensorRT-target graph or an engine) or int8-cpu (the graph for ONNX Runtime's CPU)."""
    info = getattr(backend, "info", None)
    if info is None:
        return "fp32"
    return f"{info.precision}-cpu" if info.details.get("target") == "cpu" else info.precision


@dataclass
class Configuration:
    """One model (or top-down pair) opened: backend, detector backend or None, and how to name it."""

    spec: Spec
    backend: object
    detector: object | None

    @classmethod
    def open(cls, spec: Spec, device: str | None = None) -> "Configuration":
        backend = open_artifact(spec.model, device)
        detector = open_artifact(spec.detector, device) if spec.detector else None
        if detector is not None:
            if backend.meta.family != "simple_baseline":
                raise PoseEdgeError(f"{spec.model}: a {backend.meta.family} model needs no detector; POSE+DET pairs a "
                                    "top-down (simple_baseline) model with a person detector")
            if detector.meta.family != "person_detector":
                raise PoseEdgeError(f"{spec.detector} is a {detector.meta.family} model, not a person detector")
        return cls(spec, backend, detector)

    @property
    def paradigm(self) -> str:
        family = self.backend.meta.family
        return {"simple_baseline": "top_down", "person_detector": "detector"}.get(family, "single_stage")

    @property
    def label(self) -> str:
        """e.g. "kapao-tiny int8 ORT-CPU", "sb-r18-128x96 fp32 + det-tiny fp32 ORT-CPU"."""
        text = f"{self.backend.meta.preset} {precision(self.backend)}"
        if self.detector is not None:
            text += f" + {self.detector.meta.preset} {precision(self.detector)}"
        elif self.paradigm == "top_down":
            text += " (given boxes)"
        return f"{text} {runtime_name(self.backend)}"

    def close(self) -> None:
        for b in (self.backend, self.detector):
            if b is not None and hasattr(b, "close"):
                b.close()

