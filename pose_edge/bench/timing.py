"""The measurement loop, its statistics, and the clocks.

    samples = measure({"a": step_a, "b": step_b}, warmup=5, iters=30)   # step() -> {"end_to_end": s, ...}, in rounds;
                                                                          # the warm-up rounds are dropped
    summary = summarize([s["end_to_end"] for s in samples["a"]])   # {"p50": ms, "p90": ms, "p99": ms, "mean": ms, ...}

Clocks: the host's monotonic clock (time.perf_counter) times every stage and the whole frame: the backends
synchronise before returning (TensorRT waits for its stream; the CUDA decode stages copy their result back), so a
host interval covers the GPU work inside it. The model alone on a TensorRT engine is timed by CUDA events recorded on
the engine's stream (CudaEventClock), i.e. on the device's own clock. CudaEventClock has not run on a GPU where it was
written (no GPU there); it is code against cuda-python's documented driver API, checked only for the names it calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

PERCENTILES = (50, 90, 99)


def measure(steps: dict[str, Callable[[], dict]], warmup: int, iters: int) -> dict[str, list[dict]]:
    """Call every step warmup + iters times, in rounds (one call of each step per round, in order), and return each
    step's last iters results. The warm-up rounds are discarded: first calls pay for lazy allocation, kernel selection
    and cold caches. Rounds rather than one step after another, so that a change in the machine's load (it is often
    shared) falls on every step alike and their ratios hold."""
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got {warmup} and {iters}")
    results: dict[str, list[dict]] = {name: [] for name in steps}
    for round_ in range(warmup + iters):
        for name, step in steps.items():
            out = step()
            if round_ >= warmup:
                results[name].append(out)
    return results


def summarize(seconds) -> dict:
    """Seconds -> milliseconds: p50, p90, p99 (linear interpolation between samples), mean, min, max, n."""
    ms = 1000.0 * np.asarray(seconds, np.float64)
    out = {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in PERCENTILES}
    out.update(mean=round(float(ms.mean()), 3), min=round(float(ms.min()), 3), max=round(float(ms.max()), 3),
               n=int(ms.size))
    return out


class HostClock:
    """Wall time of fn() on the host's monotonic clock."""

    name = "host monotonic clock (time.perf_counter)"

    def time(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def close(self) -> None:
        pass


class CudaEventClock:
    """Device time of the work fn() queues on `stream` (a cuda-python CUstream), between two CUDA events.

    The events bracket fn() on the stream; cuEventSynchronize waits for the second, cuEventElapsedTime reads the
    interval (about 0.5 us resolution). fn() may synchronise itself (TrtBackend.run_device does); the interval then
    ends when the device reaches the second event, a few microseconds after the work.
    """

    name = "CUDA events on the engine's stream (cuda-python driver API)"

    def __init__(self, stream):
        from pose_edge.runtime.gpu import check, driver

        self._drv, self._check, self.stream = driver(), check, stream
        flags = int(self._drv.CUevent_flags.CU_EVENT_DEFAULT)
        self._start = check(self._drv.cuEventCreate(flags), "cuEventCreate")
        self._end = check(self._drv.cuEventCreate(flags), "cuEventCreate")

    def time(self, fn: Callable[[], object]) -> float:
        drv, check = self._drv, self._check
        check(drv.cuEventRecord(self._start, self.stream), "cuEventRecord")
        fn()
        check(drv.cuEventRecord(self._end, self.stream), "cuEventRecord")
        check(drv.cuEventSynchronize(self._end), "cuEventSynchronize")
        return check(drv.cuEventElapsedTime(self._start, self._end), "cuEventElapsedTime") / 1000.0

    def close(self) -> None:
        for event in (self._start, self._end):
            self._check(self._drv.cuEventDestroy(event), "cuEventDestroy")
        self._start = self._end = None


def model_clock(backend):
    """CUDA events for a TensorRT backend (outputs on the device, a stream of its own), else the host clock (ONNX
    Runtime's session.run and PyTorch's CPU path return when the work is done)."""
    if hasattr(backend, "run_device") and getattr(backend, "stream", None) is not None:
        return CudaEventClock(backend.stream)
    return HostClock()
