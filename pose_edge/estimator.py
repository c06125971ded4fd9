"""The runtime's entry point: one call from a model file to poses, for both paradigms. Torch-free.

    import pose_edge
    est = pose_edge.load("kapao-s-int8.engine")                                  # single-stage (or an .onnx)
    est = pose_edge.load("sb-r50-fp16.engine", detector="det-s-int8.engine")      # top-down: detector + pose model
    poses = est(frame)              # frame uint8 [H, W, 3], BGR (color="rgb" for ROS rgb8 / PIL frames) -> Poses
    for frame, poses in est.stream("video.mp4"): ...                             # files, cameras, URLs, folders

How it runs is chosen once, honestly, and `est.describe()` says what was chosen:
  backend   an engine -> TensorRT (needs an NVIDIA GPU); an .onnx -> ONNX Runtime, on the GPU only when its CUDA
            provider really is active (the GPU build silently falls back to the CPU; the active provider is reported);
            a run folder or checkpoint -> PyTorch (imported only then; the runtime itself never needs it).
  decoding  with TensorRT, the CUDA kernels read the engine's output buffers where they lie and only the final poses
            cross to the host; elsewhere the NumPy decoders. decode="numpy" | "cuda" overrides.
  settings  deployment thresholds (pose_edge.runtime.settings.DEPLOY: the people who are there), not the COCO
            evaluation's keep-everything settings; settings="coco" or a Settings, conf=... to override.
Frames are checked at the boundary: a wrong dtype, shape or channel count, or an empty frame, is a one-line
PoseEdgeError; per-person garbage from an upstream detector (non-finite or empty boxes) is dropped with a warning.

Layer: above the runtime and the kernels (it wires the kernels' GPU decode stages into the runtime's pipelines),
below evaluation, training and the CLI.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.artifacts import open_artifact
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.settings import COCO_EVAL, DEPLOY, PROFILES, Settings
from pose_edge.runtime.single_stage import FAMILIES as SINGLE_STAGE_FAMILIES
from pose_edge.runtime.single_stage import PLAIN, SingleStagePipeline, settings_passes
from pose_edge.runtime.timing import StageTimer
from pose_edge.runtime.topdown import TopDownPipeline

DECODE_CHOICES = ("auto", "numpy", "cuda")
COLORS = ("bgr", "rgb")


def check_frame(frame) -> np.ndarray:
    """The frame as uint8 [H, W, 3], or a one-line PoseEdgeError saying what is wrong with it."""
    if not isinstance(frame, np.ndarray):
        raise PoseEdgeError(f"a frame must be a numpy array uint8 [H, W, 3], got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise PoseEdgeError(f"a frame must be uint8 [H, W, 3] (0-255), got dtype {frame.dtype}; convert it, e.g. "
                            "(x * 255).clip(0, 255).astype(np.uint8) for floats in 0-1")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 4)):
        channels = 1 if frame.ndim == 2 else frame.shape[2]
        raise PoseEdgeError(f"a frame must have 3 colour channels, got {channels}; convert it with cv2.cvtColor "
                            f"({'GRAY2BGR' if channels == 1 else 'BGRA2BGR'})")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise PoseEdgeError(f"a frame must be uint8 [H, W, 3], got shape {list(frame.shape)}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise PoseEdgeError(f"the frame is empty ({frame.shape[1]}x{frame.shape[0]} pixels)")
    return frame


def resolve_settings(settings: str | Settings, conf: float | None = None) -> Settings:
    """A profile name (pose_edge.runtime.settings.PROFILES) or a Settings -> Settings; conf overrides the person
    confidence threshold of both paradigms (single-stage candidates, detector boxes) and the minimum pose score."""
    if isinstance(settings, str):
        if settings not in PROFILES:
            raise PoseEdgeError(f"unknown settings {settings!r}; expected one of {', '.join(PROFILES)} or a Settings")
        settings = PROFILES[settings]
    if conf is not None:
        if not 0.0 <= conf < 1.0:
            raise PoseEdgeError(f"conf must lie in [0, 1), got {conf}")
        settings = dataclasses.replace(
            settings, single_stage=dataclasses.replace(settings.single_stage, conf_thres=conf),
            detector=dataclasses.replace(settings.detector, conf_thres=conf), min_score=conf)
    return settings


class Estimator:
    """frame -> Poses, for a single-stage model, a top-down model with its detector, or a person detector alone.

    Build it with `pose_edge.load`. backend / detector: runtime backends (see pose_edge.runtime.backend);
    decoder / detector_decoder: decode stages (None: NumPy); tracker / smoother: objects with update(...) as in
    pose_edge.runtime.tracking and pose_edge.runtime.smoothing (None: off).
    """

    def __init__(self, backend, detector=None, settings: Settings = DEPLOY, color: str = "bgr", decoder=None,
                 detector_decoder=None, tracker=None, smoother=None):
        if color not in COLORS:
            raise PoseEdgeError(f"unknown color order {color!r}; expected one of {', '.join(COLORS)}")
        self.backend, self.detector, self.settings, self.color = backend, detector, settings, color
        self.tracker, self.smoother = tracker, smoother
        self.timer = StageTimer()
        family = backend.meta.family
        if family in SINGLE_STAGE_FAMILIES:
            if detector is not None:
                raise PoseEdgeError(f"{backend.meta.preset} is a single-stage {family} model; it needs no detector")
            thresholds = settings.detector if family == "person_detector" else settings.single_stage
            self.paradigm = "detector" if family == "person_detector" else "single_stage"
            options = ({"scales": settings.scales, "flip": settings.flip, "scale_flips": settings.scale_flips,
                        "rect": settings.rect, "clip": settings.clip} if family == "kapao" else {})
            self.pipeline = SingleStagePipeline(backend, thresholds, decoder, timer=self.timer, **options)
            self.box_pipeline = None
        elif family == "simple_baseline":
            self.paradigm = "top_down"
            self.pipeline = TopDownPipeline(backend, settings.topdown, decoder, flip=settings.flip, timer=self.timer)
            self.box_pipeline = None
            if detector is not None:
                if detector.meta.family != "person_detector":
                    raise PoseEdgeError(f"{detector.meta.preset} is a {detector.meta.family} model, not a person "
                                        "detector (train one with `pose-edge train det-s`)")
                self.box_pipeline = SingleStagePipeline(detector, settings.detector, detector_decoder,
                                                        timer=self.timer)
        else:
            raise PoseEdgeError(f"{backend.meta.preset}: no pipeline for the {family} family")
        self.meta = backend.meta

    # ---------------------------------------------------------------------------------------------------- frames
    def __call__(self, frame: np.ndarray, boxes=None, box_scores=None, timestamp: float | None = None) -> Poses:
        """One frame -> Poses in its pixels. boxes [P, 4] xyxy (and box_scores [P]) give a top-down model its people
        instead of its detector (a robot's own detector, or ground truth)."""
        return self.predict_batch([frame], None if boxes is None else [boxes],
                                  None if box_scores is None else [box_scores], timestamp)[0]

    def predict_batch(self, frames, boxes=None, box_scores=None, timestamp: float | None = None) -> list[Poses]:
        """Several frames at once: single-stage models and detectors run them as one backend batch."""
        frames = [self._to_bgr(check_frame(f)) for f in frames]
        if self.tracker is not None and len(frames) > 1:
            raise PoseEdgeError("tracking follows one stream frame by frame: call the estimator once per frame")
        self.timer.start_frame()
        if self.paradigm != "top_down":
            if boxes is not None:
                raise PoseEdgeError("boxes are for top-down models; a single-stage model finds its own people")
            results = self.pipeline(frames)
        else:
            if boxes is None:
                if self.box_pipeline is None:
                    raise PoseEdgeError(f"{self.meta.preset} is a top-down model: give it person boxes, or load it "
                                        "with a detector (pose_edge.load(model, detector=...))")
                found = self.box_pipeline(frames)
                boxes, box_scores = [p.boxes for p in found], [p.scores for p in found]
            elif len(boxes) != len(frames):
                raise PoseEdgeError(f"{len(frames)} frames but {len(boxes)} box arrays")
            box_scores = box_scores if box_scores is not None else [None] * len(frames)
            results = [self.pipeline(f, b, s) for f, b, s in zip(frames, boxes, box_scores)]
            dropped = sum(r.extra.get("dropped_boxes", 0) for r in results)
            if dropped:
                warnings.warn(f"{dropped} person box(es) dropped: non-finite, empty or outside the frame",
                              stacklevel=3)
        people = sum(r.extra.get("non_finite_people", 0) for r in results)
        keypoints = sum(r.extra.get("non_finite_keypoints", 0) for r in results)
        if people or keypoints:
            warnings.warn(f"the model output NaN or Inf: {people} person(s) dropped, {keypoints} keypoint(s) set to "
                          "not found", stacklevel=3)
        return [self._finish(r, timestamp) for r in results]

    def _to_bgr(self, frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame[..., ::-1]) if self.color == "rgb" else frame

    def _finish(self, poses: Poses, timestamp: float | None) -> Poses:
        """Minimum score, then identities and smoothing (in that order: a smoother follows tracks)."""
        if self.settings.min_score > 0 and len(poses):
            poses = poses.select(poses.scores >= self.settings.min_score)
        if self.tracker is not None:
            timestamp = time.monotonic() if timestamp is None else timestamp  # the filters need a clock
            with self.timer("tracking"):
                keypoints = poses.keypoints if poses.num_keypoints else None
                poses.track_ids = self.tracker.update(poses.boxes, poses.scores, keypoints, timestamp=timestamp)
                if self.smoother is not None and poses.num_keypoints:
                    poses.keypoints = self.smoother.update(poses.track_ids, poses.keypoints, timestamp)
        return poses

    def infer_frame(self, frame) -> Poses:
        """A runtime.sources.Frame -> Poses. The tracker's and smoother's clock is the frame's time in its video file
        (a file is read ahead faster than it plays), else its capture time (cameras, streams)."""
        clock = frame.video_time if frame.video_time is not None else frame.timestamp
        return self(frame.image, timestamp=clock)

    def stream(self, source, render=None) -> Iterator[tuple[object, Poses]]:
        """(Frame, Poses) for every frame of `source` (anything pose_edge.runtime.sources.open_source takes: a video
        file, a camera index, a stream URL, an image, a folder or glob, or an iterable of frames), with capture,
        inference and render(frame, poses) overlapped in threads (pose_edge.runtime.stream). Live sources drop stale
        frames rather than fall behind; file sources keep every frame."""
        from pose_edge.runtime.stream import StreamRunner

        yield from StreamRunner(source, self.infer_frame, render)

    # ---------------------------------------------------------------------------------------------------- report
    def describe(self) -> dict:
        """What runs: paradigm, model(s) with backend, active provider, precision, input size, decoder, settings."""
        out = {"paradigm": self.paradigm, "model": describe_backend(self.backend, self.pipeline.decoder),
               "settings": dataclasses.asdict(self.settings), "color": self.color,
               "tracking": self.tracker is not None, "smoothing": self.smoother is not None}
        if self.box_pipeline is not None:
            out["detector"] = describe_backend(self.detector, self.box_pipeline.decoder)
        return out

    def close(self) -> None:
        for b in (self.backend, self.detector):
            if b is not None and hasattr(b, "close"):
                b.close()

    def __enter__(self) -> "Estimator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe_backend(backend, decoder) -> dict:
    meta = backend.meta
    info = getattr(backend, "info", None)
    kind = type(backend).__name__
    runtime = {"OrtBackend": "onnxruntime", "TrtBackend": "tensorrt", "TorchBackend": "pytorch"}.get(kind, kind)
    providers = getattr(backend, "providers", None)
    if runtime == "onnxruntime":
        device = "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"
    elif runtime == "tensorrt":
        device = "cuda"
    else:
        device = str(getattr(backend, "device", "cpu"))
    return {
        "preset": meta.preset, "family": meta.family, "file": str(getattr(backend, "path", "")),
        "backend": runtime, "device": device, "providers": list(providers) if providers else None,
        "precision": info.precision if info is not None else "fp32",
        "input": [meta.input.height, meta.input.width],
        "decoder": f"{decoder.name} ({'GPU' if decoder.on_device else 'CPU'})",
    }


def _host_only(settings: Settings, meta) -> bool:
    """Whether the settings combine outputs on the host for this model: the top-down flip test; KAPAO's test-time
    augmentation and clipping."""
    if meta.family == "simple_baseline":
        return settings.flip
    if meta.family == "kapao":
        return settings_passes(settings) != PLAIN or settings.clip
    return False


def _decoder_for(backend, decode: str, pipeline_kind: str, settings: Settings, device_obj=None):
    """The decode stage: the CUDA kernels where the backend's outputs live on the GPU (or decode='cuda'), else None
    (the pipeline's NumPy stage)."""
    if decode not in DECODE_CHOICES:
        raise PoseEdgeError(f"unknown decode {decode!r}; expected one of {', '.join(DECODE_CHOICES)}")
    on_gpu = hasattr(backend, "run_device")
    if decode == "numpy" or (decode == "auto" and not on_gpu):
        return None
    if _host_only(settings, backend.meta):
        if decode == "cuda":
            raise PoseEdgeError("the flip test, test-time augmentation and clipping combine heatmaps or rows on the "
                                "host; use decode='numpy' with them")
        return None
    from pose_edge.kernels.cuda_device import CudaDevice
    from pose_edge.kernels.stages import GpuHeatmapDecoder, GpuKapaoDecoder

    device = device_obj or CudaDevice(stream=int(backend.stream) if on_gpu else None)
    meta = backend.meta
    if pipeline_kind == "top_down":
        from pose_edge.runtime.topdown import decode_options

        return GpuHeatmapDecoder(*decode_options(meta, settings.topdown), device=device)
    thresholds = settings.detector if meta.family == "person_detector" else settings.single_stage
    return GpuKapaoDecoder(meta, thresholds, device=device)


def load(model, detector=None, *, device: str | None = None, settings: str | Settings = "deploy",
         conf: float | None = None, color: str = "bgr", decode: str = "auto", track: bool = False,
         smooth: bool = False, flip: bool | None = None, refine: str | None = None) -> Estimator:
    """An Estimator from a model file (.onnx, engine, run folder or checkpoint) or a runtime Backend, with an
    optional person detector for a top-down model.

    device: None (a GPU where one is usable, else the CPU), "cpu", "cuda" / "cuda:N". settings: "deploy" (default),
    "coco", "paper", "paper-tta" (pose_edge.runtime.settings.PROFILES) or a Settings; conf: the person confidence
    threshold. color: the frames' channel order, "bgr" (OpenCV) or "rgb". decode: "auto", "numpy" or "cuda".
    track: persistent track ids; smooth: One Euro filtering of keypoints along tracks (needs track). flip: test-time
    flip; refine: heatmap refinement (top-down): "auto" (the model's convention's), "dark", "quarter" or "none".
    """
    settings = resolve_settings(settings, conf)
    if flip is not None:
        settings = dataclasses.replace(settings, flip=flip)
    if refine is not None:
        settings = dataclasses.replace(settings, topdown=dataclasses.replace(settings.topdown, refine=refine))
    if smooth and not track:
        raise PoseEdgeError("smoothing follows people over time: it needs track=True")
    backend = _as_backend(model, device)
    det_backend = _as_backend(detector, device) if detector is not None else None
    kind = "top_down" if backend.meta.family == "simple_baseline" else "single_stage"
    decoder = _decoder_for(backend, decode, kind, settings)
    det_decoder = _decoder_for(det_backend, decode, "single_stage", settings) if det_backend is not None else None
    tracker = smoother = None
    if track:
        from pose_edge.runtime.tracking import PoseTracker

        tracker = PoseTracker()
        if smooth:
            from pose_edge.runtime.smoothing import KeypointSmoother

            smoother = KeypointSmoother()
    return Estimator(backend, det_backend, settings, color, decoder, det_decoder, tracker, smoother)


def _as_backend(model, device: str | None):
    if isinstance(model, (str, Path)):
        return open_artifact(model, device)
    if not hasattr(model, "run") or not hasattr(model, "meta"):
        raise PoseEdgeError(f"not a model: {model!r}; pass an .onnx, engine or run-folder path, or a runtime Backend")
    return model


__all__ = ["COCO_EVAL", "DEPLOY", "Estimator", "Poses", "Settings", "check_frame", "load"]
