"""The GPU decode kernels against the NumPy decoders, on the same raw outputs of the same model.

    compare_decoders(backend, settings, frame, device)      device: a pose_edge.kernels CudaDevice (or, to run the
                                                           kernels' CPU emulation, an EmulatedDevice)
One call of the estimator with its NumPy decode stage records what that stage was given (raw grids or heatmaps, and
the letterbox / heatmap-to-frame geometry); both stages then decode exactly that, `repeat` times each:
    numpy          the NumPy stage (host arrays in, poses out)
    gpu_from_host  the CUDA stage on the same host arrays (upload, kernels, copy back of the poses)
    gpu_on_device  where the backend leaves its outputs on the GPU (TensorRT run_device): the kernels on those
                   buffers, only the poses copied back (what the pipeline does with an engine)
and the results are compared (largest absolute difference of keypoints and boxes; the same number of people).
Timed on the host clock: the GPU stages return host results, so they synchronise before returning.
Nothing here has run on a GPU where it was written; the comparison itself runs here on the emulated kernels (tests).
"""

from __future__ import annotations

import numpy as np

from pose_edge.bench.frames import BenchFrame
from pose_edge.bench.latency import RecordingBackend
from pose_edge.bench.timing import HostClock, summarize
from pose_edge.estimator import Estimator


class RecordingDecoder:
    """A host decode stage that remembers the arguments of its calls."""

    on_device = False

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.calls: list[tuple] = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.inner(*args)


def gpu_stage_like(numpy_stage, meta, device):
    """The CUDA decode stage with the NumPy stage's settings."""
    from pose_edge.kernels.stages import GpuHeatmapDecoder, GpuKapaoDecoder

    if meta.family == "simple_baseline":
        return GpuHeatmapDecoder(numpy_stage.refine, numpy_stage.dark_kernel, device=device)
    return GpuKapaoDecoder(meta, numpy_stage.thresholds, device=device)


def difference(a, b) -> tuple[bool, float | None]:
    """(same number of people everywhere, largest absolute difference or None if not) of two decode results:
    keypoint arrays [N, K, 3] (top-down) or lists of Poses (single-stage)."""
    if isinstance(a, np.ndarray):
        if a.shape != b.shape:
            return False, None
        return True, float(np.abs(a - b).max()) if a.size else 0.0
    if len(a) != len(b) or any(len(p) != len(q) for p, q in zip(a, b)):
        return False, None
    diffs = [np.abs(p.keypoints - q.keypoints).max() for p, q in zip(a, b) if len(p) and p.num_keypoints]
    diffs += [np.abs(p.boxes - q.boxes).max() for p, q in zip(a, b) if len(p)]
    return True, float(max(diffs, default=0.0))


def compare_decoders(backend, settings, frame: BenchFrame, device, repeat: int = 20, tolerance: float = 2e-3
                     ) -> dict:
    """Time and compare the NumPy and CUDA decode stages of `backend` (any family) on one frame."""
    recorder = RecordingBackend(backend)
    est = Estimator(recorder, settings=settings)
    numpy_stage = est.pipeline.decoder
    est.pipeline.decoder = stage = RecordingDecoder(numpy_stage)
    if est.paradigm == "top_down":
        est(frame.image, frame.boxes)
    else:
        est(frame.image)
    if not stage.calls:
        return {"skipped": "the frame gave the decoder nothing to decode"}
    args = stage.calls[-1]
    gpu = gpu_stage_like(numpy_stage, backend.meta, device)
    clock = HostClock()
    out = {"device": getattr(device, "name", type(device).__name__), "repeat": repeat}
    reference = numpy_stage(*args)
    runs = {"numpy": lambda: numpy_stage(*args), "gpu_from_host": lambda: gpu(*args)}
    if hasattr(backend, "run_device"):
        _, images = recorder.calls[-1]
        on_device = backend.run_device(images)
        buffers = on_device[0] if backend.meta.family == "simple_baseline" else on_device
        runs["gpu_on_device"] = lambda: gpu.decode_device(buffers, args[1])
    for name, run in runs.items():
        result = run()  # warm-up (module load, first allocations), and the result compared
        same, diff = difference(reference, result)
        out[name] = {**summarize([clock.time(run) for _ in range(repeat)]),
                     "same_people": same, "max_abs_diff": diff}
    out["agree"] = all(out[n]["same_people"] and out[n]["max_abs_diff"] <= tolerance for n in runs)
    out["speedup_from_host"] = round(out["numpy"]["p50"] / max(out["gpu_from_host"]["p50"], 1e-9), 2)
    if "gpu_on_device" in out:
        out["speedup_on_device"] = round(out["numpy"]["p50"] / max(out["gpu_on_device"]["p50"], 1e-9), 2)
    return out
