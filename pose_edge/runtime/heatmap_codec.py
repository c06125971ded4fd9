"""Gaussian heatmaps: keypoints in input pixels <-> one map per keypoint. Encodes training targets, decodes outputs.

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

from pose_edge.runtime.heatmap_decode import dark_kernel_for_sigma, decode_heatmaps


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

    def decode(self, heatmaps: np.ndarray, refine: str = "dark", input_to_image: np.ndarray | None = None
               ) -> np.ndarray:
        """heatmaps [N, K, h, w] -> float32 [N, K, 3] (x, y, score): input pixels, or image pixels through
        input_to_image [N, 2, 3] (the inverse of each crop's image -> input affine)."""
        n = heatmaps.shape[0]
        to_input = np.broadcast_to(np.vstack([self.heatmap_to_input, [0, 0, 1]]), (n, 3, 3))
        if input_to_image is not None:
            a = np.concatenate([np.asarray(input_to_image, np.float64), np.tile([[[0, 0, 1.0]]], (n, 1, 1))], 1)
            to_input = a @ to_input
        return decode_heatmaps(heatmaps, to_input[:, :2], refine=refine, dark_kernel=self.dark_kernel)
