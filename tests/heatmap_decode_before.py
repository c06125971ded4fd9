"""The heatmap decoder as it was before the fast path (issue 14), kept verbatim (but for the blur weights, which it
takes from pose_edge) as the reference the tests compare pose_edge.runtime.heatmap_decode with. Same contract
(heatmap_decode's docstring)."""

from __future__ import annotations

import numpy as np

from pose_edge.errors import PoseEdgeError

REFINE_MODES = ("none", "quarter", "dark")
DEFAULT_DARK_KERNEL = 11  # DARK's configs for sigma 2 (and, as shipped, sigma 3)
MAX_DARK_KERNEL = 17  # the CUDA kernel's shared-memory window holds blur radii up to 8
LOG_FLOOR = 1e-10  # DARK clamps the blurred map here before the log


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


def dark_blur_weights(kernel: int) -> np.ndarray:
    """The blur weights are not part of what the fast path changed: both decoders take today's (OpenCV's sigma-0
    kernel, tables up to 7 taps since issue 12; tested against cv2 in test_conventions)."""
    from pose_edge.runtime.heatmap_decode import dark_blur_weights as current

    return current(kernel)


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
