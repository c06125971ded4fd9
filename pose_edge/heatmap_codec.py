"""Gaussian heatmaps: keypoints in input pixels <-> one map per keypoint. Encodes training targets and owns the
heatmap <-> input convention that decoding applies (heatmap_to_image); finding the peaks is the decoders' job.

Coordinates. Input pixels and heatmap pixels both put the centre of their top-left pixel at (0, 0). Heatmap pixel
(i, j) covers input pixels stride*j .. stride*j + stride-1, so its centre is at input x = stride*j + (stride-1)/2:

    x_in = stride * x_hm + (stride - 1) / 2          x_hm = (x_in - (stride - 1) / 2) / stride

This is the exact area mapping (the heatmap is the input downsampled by `stride` with aligned edges), and it makes a
horizontal flip exact: x_in -> W_in - 1 - x_in is x_hm -> W_hm - 1 - x_hm when W_in = stride * W_hm, so flipped
heatmaps need no shift (`pose_edge.runtime.topdown.flip_back`). The reference (Simple Baselines) uses x_hm = x_in / 4
and shifts flipped heatmaps by one column to make up for it; UDP (reference §C.3) fixes the same bias differently.

Targets are unnormalised Gaussians (peak 1) at the real-valued keypoint position over the whole map, not rounded to
a pixel (DARK's unbiased encoding), with weight 1 for labelled keypoints (v > 0) whose centre lies within 3 sigma of
the map, 0 otherwise (then the map is all zero).
"""

from __future__ import annotations

import numpy as np

MAX_DARK_KERNEL = 17  # the CUDA decode kernel's shared-memory window holds blur radii up to 8


def dark_kernel_for_sigma(sigma: float) -> int:
    """The DARK blur kernel size for a target sigma (heatmap pixels): 3 for sigma 1, 11 for sigma 2, 17 for sigma 3.

    Sigma 1 and 2 follow DARK's configs (128x96 and 256x192); sigma 3 follows mmpose's recommendation of 17, which is
    what 6*sigma - 1 gives; other sigmas use that rule, rounded to an odd size in 3..MAX_DARK_KERNEL.
    """
    if sigma <= 1.0:
        return 3
    k = int(round(6.0 * sigma - 1.0))
    k += 1 - k % 2
    return int(min(max(k, 3), MAX_DARK_KERNEL))


class GaussianHeatmapCodec:
    """input_size (H, W) in pixels; stride: input pixels per heatmap pixel; sigma: Gaussian sigma in heatmap pixels."""

    def __init__(self, input_size: tuple[int, int], stride: int = 4, sigma: float = 2.0):
        h, w = input_size
        if h % stride or w % stride:
            raise ValueError(f"input size {input_size} is not a multiple of the heatmap stride {stride}")
        self.input_size = (h, w)
        self.stride = stride
        self.sigma = float(sigma)
        self.heatmap_size = (h // stride, w // stride)
        self.dark_kernel = dark_kernel_for_sigma(self.sigma)

    @property
    def heatmap_to_input(self) -> np.ndarray:
        """float64 [2, 3]: the affine heatmap pixels -> input pixels."""
        s, o = float(self.stride), (self.stride - 1) / 2.0
        return np.array([[s, 0.0, o], [0.0, s, o]])

    def to_heatmap(self, xy: np.ndarray) -> np.ndarray:
        """[..., 2] input pixels -> heatmap pixels."""
        return (np.asarray(xy, np.float64) - (self.stride - 1) / 2.0) / self.stride

    def encode(self, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """keypoints float [K, 3] (x, y, v) in input pixels -> (heatmaps float32 [K, h, w], weights float32 [K])."""
        keypoints = np.asarray(keypoints, np.float64)
        hh, hw = self.heatmap_size
        mu = self.to_heatmap(keypoints[:, :2])  # [K, 2]
        reach = 3.0 * self.sigma
        weights = ((keypoints[:, 2] > 0) & (mu[:, 0] > -reach) & (mu[:, 0] < hw - 1 + reach)
                   & (mu[:, 1] > -reach) & (mu[:, 1] < hh - 1 + reach) & np.isfinite(mu).all(1))
        mu = np.where(weights[:, None], mu, 0.0)
        gx = np.exp(-((np.arange(hw)[None, :] - mu[:, :1]) ** 2) / (2 * self.sigma**2))  # [K, w]
        gy = np.exp(-((np.arange(hh)[None, :] - mu[:, 1:]) ** 2) / (2 * self.sigma**2))  # [K, h]
        heatmaps = (gy[:, :, None] * gx[:, None, :]) * weights[:, None, None]
        return heatmaps.astype(np.float32), weights.astype(np.float32)

    def heatmap_to_image(self, input_to_image: np.ndarray) -> np.ndarray:
        """float64 [N, 2, 3]: heatmap pixels -> image pixels, given each crop's input -> image affine [N, 2, 3]
        (the inverse of its image -> input affine). The decoders take it as it is (pose_edge.runtime.heatmap_decode
        and the CUDA kernel), so the convention lives here only."""
        a = np.asarray(input_to_image, np.float64)
        h = self.heatmap_to_input
        out = np.empty_like(a)
        out[:, :, :2] = a[:, :, :2] @ h[:, :2]
        out[:, :, 2] = a[:, :, :2] @ h[:, 2] + a[:, :, 2]
        return out
