"""Per-stage wall-clock times of a pipeline (preprocess, inference, postprocess), on a monotonic clock.

    timer = StageTimer()
    with timer("inference"):
        ...
    timer.last       {"preprocess": s, "inference": s, ...} of the latest frame
    timer.totals     sums over every frame since reset(); timer.frames counts frames

GPU stages that queue work asynchronously must synchronise before their `with` block ends, so that the time lands
in the stage that did the work (the TensorRT backend and the CUDA decode stages do).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict


class StageTimer:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.last: dict[str, float] = {}
        self.totals: dict[str, float] = defaultdict(float)
        self.frames = 0

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.last[stage] = self.last.get(stage, 0.0) + elapsed
            self.totals[stage] += elapsed

    def start_frame(self) -> None:
        """Begin a new frame (or batch): `last` is cleared, the frame counted."""
        self.last = {}
        self.frames += 1

    def mean_ms(self) -> dict[str, float]:
        """Mean milliseconds per frame of each stage since reset()."""
        return {k: 1000.0 * v / max(self.frames, 1) for k, v in self.totals.items()}
