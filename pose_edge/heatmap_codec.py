"""Gaussian heatmaps: keypoints in input pixels <-> one map per keypoint. Encodes training targets and owns the
heatmap <-> input convention that decoding applies (heatmap_to_image); finding the peaks is the decoders' job.

Coordinates. Input pixels and heatmap pixels both put the centre of their top-left pixel at (0, 0). In our
convention ("pose_edge") heatmap pixel (i, j) covers input pixels stride*j .. stride*j + stride-1, so its centre is
at input x = stride*j + (stride-1)/2:

    x_in = stride * x_hm + (stride - 1) / 2          x_hm = (x_in - (stride - 1) / 2) / stride

This is the exact area mapping (the heatmap is the input downsampled by `stride` with aligned edges), and it makes a
horizontal flip exact: x_in -> W_in - 1 - x_in is x_hm -> W_hm - 1 - x_hm when W_in = stride * W_hm, so flipped
heatmaps need no shift (`pose_edge.runtime.topdown.flip_back`).

The originals' weights were trained with other conventions (pose_edge.geometry lists the crop side), which a model
carries in ModelMeta.convention and the codec takes as `convention`:
  "simple_baselines"  x_in = stride * x_hm (targets at round(x_in / stride), JointsDataset.py). A flipped crop's
                      heatmaps, flipped back, then peak 0.75 heatmap px left of the unflipped ones (x_in -> W_in-1-x_in
                      is x_hm -> W_hm - 1/4 - x_hm); the original shifts them one column right before averaging (a
                      quarter pixel too far), and so does flip_back(shift=True) for this convention. Refinement: the
                      quarter-pixel step.
  "darkpose"          one similarity with scale r = (W_in - 1)/(W_hm - 1) on both axes that maps the heatmap's centre
                      ((W_hm-1)/2, (H_hm-1)/2) onto the input's ((W_in-1)/2, (H_in-1)/2) (its targets go through
                      get_affine_transform to the heatmap size): x_in = r x_hm, y_in = r (y_hm - (H_hm-1)/2) +
                      (H_in-1)/2. Flips are exact (no shift). Refinement: DARK with the blur kernel of DarkPose's
                      ResNet configs, 3 at 128x96 and 11 at every other size (also 384x288 at sigma 3, where our rule
                      gives 17).

Targets are unnormalised Gaussians (peak 1) at the real-valued keypoint position over the whole map, not rounded to
a pixel (DARK's unbiased encoding), with weight 1 for labelled keypoints (v > 0) whose centre lies within 3 sigma of
the map, 0 otherwise (then the map is all zero). They follow the codec's convention; training uses ours only.
"""

from __future__ import annotations

import numpy as np

from pose_edge.geometry import DEFAULT_CONVENTION, check_convention

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


def dark_kernel_for(convention: str, input_size: tuple[int, int], sigma: float) -> int:
    """The DARK blur kernel a model of this convention, input size (H, W) and target sigma is decoded with.

    DarkPose sets it per config (TEST.BLUR_KERNEL): its ResNet configs use 3 at 128x96 (sigma 1) and 11 at 256x192
    and 384x288 (sigma 2 and 3). The other conventions follow the sigma rule (dark_kernel_for_sigma).
    """
    if check_convention(convention) == "darkpose":
        return 3 if tuple(input_size) == (128, 96) else 11
    return dark_kernel_for_sigma(sigma)


class GaussianHeatmapCodec:
    """input_size (H, W) in pixels; stride: input pixels per heatmap pixel; sigma: Gaussian sigma in heatmap pixels;
    convention: how heatmap pixels sit on input pixels (module docstring), which also fixes the flip handling
    (flip_shift), the default refinement (refine) and the DARK blur kernel (dark_kernel) the model is decoded with."""

    def __init__(self, input_size: tuple[int, int], stride: int = 4, sigma: float = 2.0,
                 convention: str = DEFAULT_CONVENTION):
        h, w = input_size
        if h % stride or w % stride:
            raise ValueError(f"input size {input_size} is not a multiple of the heatmap stride {stride}")
        self.input_size = (h, w)
        self.stride = stride
        self.sigma = float(sigma)
        self.convention = check_convention(convention)
        self.heatmap_size = (h // stride, w // stride)
        self.dark_kernel = dark_kernel_for(self.convention, self.input_size, self.sigma)

    @property
    def flip_shift(self) -> bool:
        """Whether flipped heatmaps move one column right before averaging (Simple Baselines' correction)."""
        return self.convention == "simple_baselines"

    @property
    def refine(self) -> str:
        """The sub-pixel refinement the convention's original code decodes with."""
        return "quarter" if self.convention == "simple_baselines" else "dark"

    @property
    def heatmap_to_input(self) -> np.ndarray:
        """float64 [2, 3]: the affine heatmap pixels -> input pixels of the codec's convention."""
        s = float(self.stride)
        if self.convention == "simple_baselines":
            return np.array([[s, 0.0, 0.0], [0.0, s, 0.0]])
        if self.convention == "darkpose":
            (h_in, w_in), (h_hm, w_hm) = self.input_size, self.heatmap_size
            r = (w_in - 1) / (w_hm - 1)
            return np.array([[r, 0.0, 0.0], [0.0, r, (h_in - 1) / 2 - r * (h_hm - 1) / 2]])
        o = (s - 1) / 2.0
        return np.array([[s, 0.0, o], [0.0, s, o]])

    def to_heatmap(self, xy: np.ndarray) -> np.ndarray:
        """[..., 2] input pixels -> heatmap pixels (the inverse of heatmap_to_input, which is diagonal)."""
        m = self.heatmap_to_input
        return (np.asarray(xy, np.float64) - m[:, 2]) / np.diag(m)

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
        and the CUDA kernel), so the convention lives in the affines only, never in a decoder."""
        a = np.asarray(input_to_image, np.float64)
        h = self.heatmap_to_input
        out = np.empty_like(a)
        out[:, :, :2] = a[:, :, :2] @ h[:, :2]
        out[:, :, 2] = a[:, :, :2] @ h[:, 2] + a[:, :, 2]
        return out
