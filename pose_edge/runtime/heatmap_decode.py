"""Top-down heatmap decoding in NumPy: argmax, sub-pixel refinement, back-projection to the image.

This module is the reference the CUDA heatmap kernel is tested against, so every rule below is part of its contract.
Torch-free and vectorised over all N*K maps (no Python loop per map).

Input and output
----------------
heatmaps     float16 or float32 [N, K, H, W] (other float dtypes are converted to float32 first): one map per crop n
             and keypoint k. Values are read as float32; every comparison below is on those float32 values.
hm_to_image  float [N, 2, 3] or None: the affine from heatmap pixels to image pixels of each crop,
             (x_img, y_img) = M @ (x, y, 1), applied in float64. None returns heatmap coordinates.
result       float32 [N, K, 3]: (x, y, score). x, y are heatmap pixels with the centre of pixel (0, 0) at (0, 0)
             (column x, row y), mapped through hm_to_image when given; score is the peak value of the map as given
             (the unblurred map; after flip averaging if the caller averaged).

Rules, in order, per map
------------------------
1. Peak. idx = np.argmax over the map flattened row-major (index = y*W + x), with numpy's rules: the first maximum
   in row-major order wins ties; a NaN beats every number (so a map holding a NaN peaks at its first NaN); +Inf beats
   finite values; -Inf loses to them. (px, py) = (idx % W, idx // W); score = map[py, px].
2. No peak. If not (score > 0) -- score <= 0 or NaN, e.g. a constant zero map -- the coordinate is (0, 0) and is not
   refined (the reference `get_max_preds` zeroes such predictions). The score is still reported as is.
3. Refinement of (x, y) = (px, py), chosen by `refine`:
   "none"     nothing.
   "quarter"  (Simple Baselines) only when 1 < px < W-1 and 1 < py < H-1 (the reference's condition: column and
              row 1 are excluded too): dx = map[py, px+1] - map[py, px-1] and dy = map[py+1, px] - map[py-1, px]
              in float32; x += 0.25 if dx > 0, -0.25 if dx < 0, else 0 (a NaN difference, from -Inf on both
              sides, counts as 0); y likewise with dy.
   "dark"     (DARK, Zhang et al. 2020) only when 2 <= px <= W-3 and 2 <= py <= H-3 (the Taylor step reads +-2):
              a. Blur: B = the map convolved with the separable kernel g (`dark_blur_weights(dark_kernel)`, float64,
                 sum 1, what cv2.GaussianBlur(k, sigma 0) uses: OpenCV's tables for k <= 7, else the Gaussian with
                 sigma = 0.3*((k-1)/2 - 1) + 0.8), with zero padding outside the map.
                 Only the 5 x 5 values B[py+j, px+i], i, j in -2..2, are needed; each is
                 sum_a g[a] * sum_b g[b] * map[py+j-r+a, px+i-r+b] in float64 (r = (k-1)/2).
              b. P = ln(max(B, 1e-10)), float64.
              c. dx = (P[0,1] - P[0,-1])/2, dy = (P[1,0] - P[-1,0])/2 (P[j, i] = P at (px+i, py+j)),
                 dxx = (P[0,2] - 2P[0,0] + P[0,-2])/4, dyy = (P[2,0] - 2P[0,0] + P[-2,0])/4,
                 dxy = (P[1,1] - P[-1,1] - P[1,-1] + P[-1,-1])/4, det = dxx*dyy - dxy^2.
              d. step = Hess^-1 (dx, dy) = ((dyy*dx - dxy*dy)/det, (dxx*dy - dxy*dx)/det); (x, y) -= step, but only
                 when det is finite and non-zero and both step components are finite; otherwise (x, y) stays.
              Differences from DARK's code, on purpose: the reference also rescales the whole blurred map so its
              maximum equals the original maximum before the log. ln(c*B) = ln B + ln c, so the derivatives and the
              step do not change; the rescale only moves the 1e-10 clamp by the factor c, which touches nothing a
              trained network outputs, and dropping it lets a kernel blur only the 5 x 5 window it reads.
4. Back-projection: (x, y) in float64 through hm_to_image; the result is cast to float32.

Heatmap pixel (0, 0) is the centre of the top-left heatmap cell; which image point that is depends on the warp
convention, and hm_to_image (built by pose_edge.runtime.topdown) carries that choice, so this module is agnostic.
"""

from __future__ import annotations

import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.heatmap_codec import MAX_DARK_KERNEL

REFINE_MODES = ("none", "quarter", "dark")
DEFAULT_DARK_KERNEL = 11  # DARK's configs for sigma 2 (and, as shipped, sigma 3)
LOG_FLOOR = 1e-10  # DARK clamps the blurred map here before the log


# cv2.getGaussianKernel(k, 0) for k <= 7: fixed tables, not the formula (DarkPose's kernel 3 is [1/4, 1/2, 1/4]).
# OpenCV 5 tabulates k = 9 too; OpenCV 3 and 4, which DarkPose ran on, use the formula there, and so does this.
OPENCV_SMALL_KERNELS = {1: (1.0,), 3: (0.25, 0.5, 0.25), 5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
                        7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125)}


def dark_blur_weights(kernel: int) -> np.ndarray:
    """float64 [kernel] summing to 1: the 1-D kernel of cv2.GaussianBlur with sigma 0, OpenCV's table for kernel <= 7,
    else the Gaussian with sigma = 0.3*((kernel-1)/2 - 1) + 0.8 (OpenCV's rule for sigma 0)."""
    _check_dark_kernel(kernel)
    if kernel in OPENCV_SMALL_KERNELS:
        return np.array(OPENCV_SMALL_KERNELS[kernel], np.float64)
    radius = (kernel - 1) // 2
    sigma = 0.3 * (radius - 1) + 0.8
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_dark_kernel(kernel) -> None:
    if not isinstance(kernel, (int, np.integer)) or kernel < 1 or kernel % 2 == 0 or kernel > MAX_DARK_KERNEL:
        raise PoseEdgeError(f"dark_kernel must be an odd integer from 1 to {MAX_DARK_KERNEL}, got {kernel!r}")


def _check_inputs(heatmaps, hm_to_image, refine: str) -> tuple[np.ndarray, np.ndarray | None]:
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 4 or not np.issubdtype(heatmaps.dtype, np.floating):
        raise PoseEdgeError(f"heatmaps must be a float array [N, K, H, W], got {heatmaps.dtype} {heatmaps.shape}")
    if heatmaps.shape[2] < 1 or heatmaps.shape[3] < 1:
        raise PoseEdgeError(f"heatmaps must have H, W >= 1, got {heatmaps.shape}")
    if refine not in REFINE_MODES:
        raise PoseEdgeError(f"unknown refine {refine!r}; expected one of {', '.join(REFINE_MODES)}")
    if hm_to_image is not None:
        hm_to_image = np.asarray(hm_to_image, dtype=np.float64)
        if hm_to_image.shape != (heatmaps.shape[0], 2, 3):
            raise PoseEdgeError(f"hm_to_image must be [N, 2, 3] = [{heatmaps.shape[0]}, 2, 3] for these heatmaps, "
                                f"got {list(hm_to_image.shape)}")
    return heatmaps.astype(np.float32, copy=False), hm_to_image


def find_peaks(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """maps float32 [M, H, W] -> (flat peak index int64 [M], peak value float32 [M]) by np.argmax's rules."""
    flat = maps.reshape(maps.shape[0], maps.shape[1] * maps.shape[2])
    idx = np.argmax(flat, axis=1)
    return idx, flat[np.arange(flat.shape[0]), idx]


def refine_quarter(maps: np.ndarray, px: np.ndarray, py: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quarter-pixel offsets (float64 [M] each) toward the higher neighbour, 0 where `active` is False or rule 3 says."""
    m, h, w = maps.shape
    ok = active & (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    rows = np.arange(m)
    # Clip so that the gathers stay in bounds; the values read for inactive maps are discarded by `ok`.
    xl, xr = np.clip(px - 1, 0, w - 1), np.clip(px + 1, 0, w - 1)
    yu, yd = np.clip(py - 1, 0, h - 1), np.clip(py + 1, 0, h - 1)
    with np.errstate(invalid="ignore"):
        dx = maps[rows, py, xr] - maps[rows, py, xl]  # float32, as the kernel computes it
        dy = maps[rows, yd, px] - maps[rows, yu, px]
        sx = (dx > 0).astype(np.float64) - (dx < 0)  # NaN -> 0
        sy = (dy > 0).astype(np.float64) - (dy < 0)
    return np.where(ok, 0.25 * sx, 0.0), np.where(ok, 0.25 * sy, 0.0)


def refine_dark(maps: np.ndarray, px: np.ndarray, py: np.ndarray, active: np.ndarray,
                kernel: int = DEFAULT_DARK_KERNEL) -> tuple[np.ndarray, np.ndarray]:
    """DARK Taylor steps (float64 [M] each) to add to (px, py); 0 where `active` is False or rule 3 says."""
    _check_dark_kernel(kernel)
    m, h, w = maps.shape
    ok = active & (px >= 2) & (px <= w - 3) & (py >= 2) & (py <= h - 3)
    r = (kernel - 1) // 2
    reach = r + 2  # the raw window around the peak that the 5 x 5 blurred values read
    g = dark_blur_weights(kernel)

    # Raw window [M, 2*reach+1, 2*reach+1] around each peak, zero outside the map (the blur's zero padding).
    offsets = np.arange(-reach, reach + 1)
    ys = py[:, None] + offsets[None, :]  # [M, S]
    xs = px[:, None] + offsets[None, :]
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    window = maps[np.arange(m)[:, None, None], np.clip(ys, 0, h - 1)[:, :, None], np.clip(xs, 0, w - 1)[:, None, :]]
    window = np.where(inside, window.astype(np.float64), 0.0)

    # Separable blur evaluated at the 5 x 5 points around the peak: along x within each row, then along y.
    taps = np.arange(5)[:, None] + np.arange(2 * r + 1)[None, :]  # [5, k]: window columns feeding output column i
    with np.errstate(invalid="ignore", over="ignore"):
        along_x = np.einsum("msik,k->msi", window[:, :, taps], g)  # [M, S, 5]
        blurred = np.einsum("mjki,k->mji", along_x[:, taps, :], g)  # [M, 5, 5], [j (y), i (x)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        p = np.log(np.maximum(blurred, LOG_FLOOR))
        c = 2  # index of the peak in the 5 x 5 patch
        dx = 0.5 * (p[:, c, c + 1] - p[:, c, c - 1])
        dy = 0.5 * (p[:, c + 1, c] - p[:, c - 1, c])
        dxx = 0.25 * (p[:, c, c + 2] - 2.0 * p[:, c, c] + p[:, c, c - 2])
        dyy = 0.25 * (p[:, c + 2, c] - 2.0 * p[:, c, c] + p[:, c - 2, c])
        dxy = 0.25 * (p[:, c + 1, c + 1] - p[:, c - 1, c + 1] - p[:, c + 1, c - 1] + p[:, c - 1, c - 1])
        det = dxx * dyy - dxy * dxy
        step_x = (dyy * dx - dxy * dy) / det
        step_y = (dxx * dy - dxy * dx) / det
    ok &= np.isfinite(det) & (det != 0) & np.isfinite(step_x) & np.isfinite(step_y)
    return np.where(ok, -step_x, 0.0), np.where(ok, -step_y, 0.0)


def decode_heatmaps(heatmaps: np.ndarray, hm_to_image: np.ndarray | None = None, refine: str = "quarter",
                    dark_kernel: int = DEFAULT_DARK_KERNEL) -> np.ndarray:
    """Keypoints from heatmaps by the rules in the module docstring.

    heatmaps [N, K, H, W] float16/float32; hm_to_image [N, 2, 3] or None; refine "quarter" | "dark" | "none";
    dark_kernel: odd blur size for "dark" (`dark_kernel_for_sigma` gives it from the target sigma).
    Returns float32 [N, K, 3]: (x, y, score), image pixels if hm_to_image is given, else heatmap pixels.
    """
    maps, affine = _check_inputs(heatmaps, hm_to_image, refine)
    if refine == "dark":
        _check_dark_kernel(dark_kernel)
    n, k, h, w = maps.shape
    if n * k == 0:
        return np.zeros((n, k, 3), np.float32)
    maps = maps.reshape(n * k, h, w)
    idx, score = find_peaks(maps)
    px, py = idx % w, idx // w
    found = score > 0  # False for NaN too
    x = np.where(found, px, 0).astype(np.float64)
    y = np.where(found, py, 0).astype(np.float64)
    if refine == "quarter":
        ox, oy = refine_quarter(maps, px, py, found)
    elif refine == "dark":
        ox, oy = refine_dark(maps, px, py, found, dark_kernel)
    else:
        ox = oy = 0.0
    x, y = (x + ox).reshape(n, k), (y + oy).reshape(n, k)
    if affine is not None:
        x, y = (affine[:, None, 0, 0] * x + affine[:, None, 0, 1] * y + affine[:, None, 0, 2],
                affine[:, None, 1, 0] * x + affine[:, None, 1, 1] * y + affine[:, None, 1, 2])
    out = np.empty((n, k, 3), np.float32)
    out[..., 0], out[..., 1], out[..., 2] = x, y, score.reshape(n, k)
    return out
