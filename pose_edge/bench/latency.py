"""One configuration timed through the runtime API: the estimators pose_edge.load builds, per stage, the model alone,
and against the number of people in the frame.

Per call of B frames (one `predict_batch`):
    end_to_end    the call, on the host's monotonic clock: what a robot waits for
    preprocess, inference, postprocess
                  the estimators' own StageTimer (Estimator.timer) for that call; for a top-down pair the detector's
                  and the pose model's stages are added (the detector runs first, on the frames)
    model_only    the backend alone (its run(), or run_device() where the outputs stay on the GPU) on exactly the
                  batches the pipeline handed it in that call, replayed right after the call, so that both are
                  measured under the same machine load; CUDA events for a TensorRT engine (timing.model_clock)
    unaccounted   end_to_end minus the three stages: frame checks, result assembly and the timer itself
A top-down model gets each frame's own person boxes (frames.BenchFrame.boxes), so that it crops exactly the people
in the frame: its cost grows with them, and a detector with random or briefly trained weights would otherwise decide
the crop count. Its detector still runs on every frame and its time counts; what it found is recorded beside.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from pose_edge.bench.frames import BenchFrame
from pose_edge.bench.timing import model_clock, summarize
from pose_edge.estimator import describe_backend, load

STAGES = ("preprocess", "inference", "postprocess")


class RecordingBackend:
    """A backend that remembers the batches it is handed (references, not copies) until `calls` is cleared, so that
    the model alone can be timed on exactly what the pipeline prepared. Everything else is the inner backend's."""

    def __init__(self, inner):
        self.inner, self.meta = inner, inner.meta
        self.calls: list[tuple[str, np.ndarray]] = []  # (method name, uint8 [N, H, W, 3])

    def run(self, images):
        self.calls.append(("run", images))
        return self.inner.run(images)

    def __getattr__(self, name):
        value = getattr(self.inner, name)  # AttributeError for what the inner backend lacks (hasattr stays honest)
        if name != "run_device":
            return value

        def run_device(images):
            self.calls.append(("run_device", images))
            return value(images)

        return run_device


class TimedPipeline:
    """The estimators of one configuration (pose_edge.load over recording backends) and one timed call of them."""

    def __init__(self, config, settings, decode: str = "auto"):
        self.paradigm = config.paradigm
        self.recorders = [RecordingBackend(b) for b in (config.backend, config.detector) if b is not None]
        self.estimator = load(self.recorders[0], settings=settings, decode=decode)
        self.detector = load(self.recorders[1], settings=settings, decode=decode) if config.detector else None
        self.estimators = [e for e in (self.detector, self.estimator) if e is not None]
        self.clocks = [model_clock(r.inner) for r in self.recorders]

    def describe(self) -> dict:
        out = {"model": describe_backend(self.recorders[0].inner, self.estimator.pipeline.decoder),
               "settings": self.estimator.describe()["settings"],
               "model_clock": self.clocks[0].name}
        if self.detector is not None:
            out["detector"] = describe_backend(self.recorders[1].inner, self.detector.pipeline.decoder)
        return out

    def step(self, frames: list[BenchFrame]) -> dict:
        """One timed call on `frames` (a batch) -> seconds per stage, and what was found."""
        for r in self.recorders:
            r.calls.clear()
        images = [f.image for f in frames]
        start = time.perf_counter()
        found = self.detector.predict_batch(images) if self.detector is not None else None
        if self.paradigm == "top_down":
            poses = self.estimator.predict_batch(images, [f.boxes for f in frames])
        else:
            poses = self.estimator.predict_batch(images)
        out = {"end_to_end": time.perf_counter() - start, **dict.fromkeys(STAGES, 0.0)}
        for est in self.estimators:
            for stage, seconds in est.timer.last.items():
                out[stage] = out.get(stage, 0.0) + seconds
        out["model_only"] = sum(clock.time(lambda r=r, method=method, x=x: getattr(r.inner, method)(x))
                                for r, clock in zip(self.recorders, self.clocks) for method, x in r.calls)
        out["people"] = sum(f.people for f in frames)
        out["poses"] = sum(len(p) for p in poses)
        out["detector_boxes"] = sum(len(p) for p in found) if found is not None else None
        return out

    def close(self) -> None:
        for clock in self.clocks:
            clock.close()


def frame_step(pipeline: TimedPipeline, frames: list[BenchFrame], batch: int):
    """A step for timing.measure: each call times `batch` frames taken in turn from `frames` (cycled)."""
    counter = itertools.count()

    def step():
        i = next(counter)
        return pipeline.step([frames[(i * batch + j) % len(frames)] for j in range(batch)])

    return step


def figures(samples: list[dict], batch: int, warmup: int) -> dict:
    """Per-call samples -> percentiles per stage, end to end, the model alone, and their ratios."""
    def column(key):
        return [s[key] for s in samples]

    e2e, model = summarize(column("end_to_end")), summarize(column("model_only"))
    host = summarize([s["preprocess"] + s["postprocess"] for s in samples])
    calls = len(samples)
    out = {
        "batch": batch, "warmup": warmup, "iters": calls,
        "end_to_end": e2e,
        "stages": {k: summarize(column(k)) for k in STAGES},
        "model_only": model,
        "pre_plus_post": host,
        "unaccounted": summarize([s["end_to_end"] - sum(s[k] for k in STAGES) for s in samples]),
        "frames_per_s": round(batch * calls / sum(column("end_to_end")), 2),
        "end_to_end_over_model": round(e2e["p50"] / model["p50"], 3) if model["p50"] > 0 else None,
        "pre_plus_post_over_model": round(host["p50"] / model["p50"], 3) if model["p50"] > 0 else None,
        "people_per_frame": round(sum(column("people")) / (batch * calls), 2),
        "poses_per_frame": round(sum(column("poses")) / (batch * calls), 2),
    }
    if samples[0]["detector_boxes"] is not None:
        out["detector_boxes_per_frame"] = round(sum(column("detector_boxes")) / (batch * calls), 2)
    return out
