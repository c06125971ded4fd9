"""Runs every kernel once on small generated inputs through a device: the workload of the ThreadSanitizer test.

    python -m pose_edge.kernels.exercise            # on the emulator ($PE_EMU_LIBRARY picks the library)

The ThreadSanitizer test runs this in a Python with libtsan preloaded and the TSan build of the emulation, once on
the real sources (no report expected) and once on a copy with one barrier removed (a race expected).
"""

from __future__ import annotations

import sys

import numpy as np

KAPAO_STRIDES = (8, 16, 32, 64)
KAPAO_ANCHORS = (((19, 27), (44, 40), (38, 94)), ((96, 68), (86, 152), (180, 137)),
                 ((140, 301), (303, 264), (238, 542)), ((436, 615), (739, 380), (925, 792)))


def exercise(device, seed: int = 0) -> dict:
    """Heatmap decode (float32 quarter and DARK, float16) and the whole KAPAO chain; returns the outputs."""
    from pose_edge.kernels.launch import HeatmapDecoder, KapaoPostprocessor

    from pose_edge.runtime.kapao_decode import Thresholds

    rng = np.random.default_rng(seed)
    heatmaps = rng.random((2, 3, 16, 12)).astype(np.float32)
    heatmaps[:, :, 6, 5] += 2.0  # an interior maximum, so both refinements run
    out = {
        "quarter": HeatmapDecoder(device, "quarter")(heatmaps),
        "dark": HeatmapDecoder(device, "dark", blur_kernel=5)(heatmaps),
        "fp16": HeatmapDecoder(device, "quarter")(heatmaps.astype(np.float16)),
    }
    nc, k = 18, 17
    depth = 5 + nc + 2 * k
    grids = [rng.normal(-2.0, 2.0, (2, 3 * depth, 64 // s, 64 // s)).astype(np.float32) for s in KAPAO_STRIDES]
    # Small capacity and max_nms: the radix select (more candidates than capacity) runs too.
    post = KapaoPostprocessor(device, KAPAO_STRIDES, KAPAO_ANCHORS, nc, k, Thresholds(max_nms=64, max_det=20),
                              capacity=64, mask_blocks=2)
    out["kapao"] = post(grids)
    return out


def main() -> int:
    from pose_edge.kernels.emulator import EmulatedDevice

    result = exercise(EmulatedDevice())
    poses = sum(len(d) for d in result["kapao"])
    print(f"ran every kernel: {poses} poses, heatmap keypoints {result['quarter'].shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
