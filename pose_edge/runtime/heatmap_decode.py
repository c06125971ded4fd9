"""Top-down heatmap decoding on the host: argmax, sub-pixel refinement, back-projection to the image.

This module is the reference the CUDA heatmap kernel is tested against, so every rule below is part of its contract.
Torch-free and vectorised over all N*K maps (no Python loop per map). Rules 2-4 run in C where setup.py built
`_peaks_native.c` (the NumPy path below is the fallback, and the reference: bit for bit for "none" and "quarter",
DARK's blur summed in another order): on a frame's few crops, NumPy's fixed cost per call is most of the time.

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

import functools
from dataclasses import dataclass

import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.heatmap_codec import MAX_DARK_KERNEL

try:  # rules 2-4 in C (setup.py builds it; optional): the NumPy path's results for less fixed cost
    from pose_edge.runtime import _peaks_native
except ImportError:  # not built here: the NumPy path below gives the same results
    _peaks_native = None
# It reads the peak indices as int64, which is what argmax gives wherever intp is 64 bits.
NATIVE_FINISH = _peaks_native is not None and np.dtype(np.intp) == np.int64

REFINE_MODES = ("none", "quarter", "dark")
DEFAULT_DARK_KERNEL = 11  # DARK's configs for sigma 2 (and, as shipped, sigma 3)
LOG_FLOOR = 1e-10  # DARK clamps the blurred map here before the log
NEG_INF_STAND_IN = -1e300  # what the blur reads for -Inf (see _dark_steps)


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


@functools.lru_cache(maxsize=16)
def _blur_weights(kernel: int) -> np.ndarray:
    return _frozen(dark_blur_weights(kernel))


def _check_dark_kernel(kernel) -> None:
    if not isinstance(kernel, (int, np.integer)) or kernel < 1 or kernel % 2 == 0 or kernel > MAX_DARK_KERNEL:
        raise PoseEdgeError(f"dark_kernel must be an odd integer from 1 to {MAX_DARK_KERNEL}, got {kernel!r}")


def _check_inputs(heatmaps, hm_to_image, refine: str) -> tuple[np.ndarray, np.ndarray | None]:
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 4 or heatmaps.dtype.kind != "f":
        raise PoseEdgeError(f"heatmaps must be a float array [N, K, H, W], got {heatmaps.dtype} {heatmaps.shape}")
    if heatmaps.shape[2] < 1 or heatmaps.shape[3] < 1:
        raise PoseEdgeError(f"heatmaps must have H, W >= 1, got {heatmaps.shape}")
    if refine not in REFINE_MODES:
        raise PoseEdgeError(f"unknown refine {refine!r}; expected one of {', '.join(REFINE_MODES)}")
    if hm_to_image is not None:
        hm_to_image = np.ascontiguousarray(hm_to_image, dtype=np.float64)
        if hm_to_image.shape != (heatmaps.shape[0], 2, 3):
            raise PoseEdgeError(f"hm_to_image must be [N, 2, 3] = [{heatmaps.shape[0]}, 2, 3] for these heatmaps, "
                                f"got {list(hm_to_image.shape)}")
    return np.ascontiguousarray(heatmaps, dtype=np.float32), hm_to_image


# Per-shape index tables, built once per map size (and batch size) and cached: with them a batch costs a fixed,
# small number of NumPy calls, each linear in the number of maps, which is what keeps one crop fast. They are laid out
# quantity-major ([what, map]): NumPy spends less on a few contiguous rows than on strided columns of small arrays.

@functools.lru_cache(maxsize=64)
def _peak_cells(h: int, w: int) -> np.ndarray:
    """float64 [3, H*W] per flat peak index: x, y, and the quarter step (0.25 where rule 3 refines, else 0).

    Index 0 holds (0, 0, 0), which is also what rule 2 gives a map without a peak.
    """
    y, x = np.divmod(np.arange(h * w), w)
    step = np.where((x > 1) & (x < w - 1) & (y > 1) & (y < h - 1), 0.25, 0.0)
    return _frozen(np.stack([x, y, step]).astype(np.float64))


@functools.lru_cache(maxsize=64)
def _neighbour_index(m: int, h: int, w: int) -> np.ndarray:
    """int64 [5, M]: flat index of map i's first pixel plus (-1, -W, 0, +1, +W): left, up, peak, right, down."""
    return _frozen(np.array([-1, -w, 0, 1, w])[:, None] + np.arange(m) * (h * w))


@dataclass(frozen=True)
class _DarkGeometry:
    """What the DARK step needs for one map size and blur kernel (reach = (kernel - 1)/2 + 2, S = 2*reach + 1).

    The raw window around a peak at (px, py) is read with its rows and columns clamped into the map, so that every
    value read is the map's own; `row_inside` and `col_inside` then zero what lies outside (the blur's zero padding).
    """

    row_start: np.ndarray  # int64 [H, S]: flat index of column 0 of window row s, for a peak in row py
    col_index: np.ndarray  # int64 [W, S]: column of window column s, for a peak in column px
    row_inside: np.ndarray  # float64 [H, S]: 1 where row py + s - reach lies in the map, else 0
    col_inside: np.ndarray  # float64 [W, S]: the same for columns
    refinable: np.ndarray  # bool [H*W] per peak index: 2 <= px <= W-3 and 2 <= py <= H-3
    blur: np.ndarray  # float64 [S, 5]: blur[t, i] = g[t - i], window column t -> blurred value at offset i - 2
    taps: np.ndarray  # int64 [13]: the blurred 5 x 5 values the derivatives read, as flat [x offset, y offset]
    stencils: np.ndarray  # float64 [8, 13]: log-values -> (dyy, dxx, dx, dy, dxy, dxy, dy, dx)


# Finite differences of P (the log of the blurred map) at the peak, keyed by (x offset, y offset): rule 3c.
_STENCILS = (
    {(1, 0): 0.5, (-1, 0): -0.5},  # dx
    {(0, 1): 0.5, (0, -1): -0.5},  # dy
    {(2, 0): 0.25, (0, 0): -0.5, (-2, 0): 0.25},  # dxx
    {(0, 2): 0.25, (0, 0): -0.5, (0, -2): 0.25},  # dyy
    {(1, 1): 0.25, (1, -1): -0.25, (-1, 1): -0.25, (-1, -1): 0.25},  # dxy
)


@functools.lru_cache(maxsize=16)
def _dark_geometry(h: int, w: int, kernel: int) -> _DarkGeometry:
    reach = (kernel - 1) // 2 + 2
    offsets = np.arange(-reach, reach + 1)
    rows, cols = np.arange(h)[:, None] + offsets, np.arange(w)[:, None] + offsets
    y, x = np.divmod(np.arange(h * w), w)
    blur = np.zeros((len(offsets), 5))
    g = dark_blur_weights(kernel)
    for i in range(5):
        blur[i:i + kernel, i] = g
    points = sorted({p for stencil in _STENCILS for p in stencil})
    return _DarkGeometry(
        row_start=_frozen(np.clip(rows, 0, h - 1) * w), col_index=_frozen(np.clip(cols, 0, w - 1)),
        row_inside=_frozen(((rows >= 0) & (rows < h)).astype(np.float64)),
        col_inside=_frozen(((cols >= 0) & (cols < w)).astype(np.float64)),
        refinable=_frozen((x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)),
        blur=_frozen(blur), taps=_frozen(np.array([(dx + 2) * 5 + (dy + 2) for dx, dy in points])),
        stencils=_frozen(np.array([[_STENCILS[i].get(p, 0.0) for p in points] for i in (3, 2, 0, 1, 4, 4, 1, 0)])))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def find_peaks(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """maps float32 [M, H, W] -> (flat peak index int64 [M], peak value float32 [M]) by np.argmax's rules."""
    m, h, w = maps.shape
    flat = maps.reshape(m, h * w)
    idx = flat.argmax(axis=1)
    return idx, flat.ravel().take(idx + _neighbour_index(m, h, w)[2])


def _quarter_steps(around: np.ndarray, step: np.ndarray) -> np.ndarray:
    """around float32 [5, M] (left, up, peak, right, down), step float64 [M] -> float64 [2, M] offsets (x, y).

    The sign of the float32 difference of the two neighbours is the comparison of the neighbours themselves, which
    also gives 0 for +-Inf on both sides (where the difference is NaN), as rule 3 says.
    """
    low, high = around[0:2], around[3:5]  # (left, up), (right, down)
    return np.subtract(high > low, high < low, dtype=np.float64) * step


def refine_quarter(maps: np.ndarray, px: np.ndarray, py: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quarter-pixel offsets (float64 [M] each) toward the higher neighbour, 0 where `active` is False or rule 3 says."""
    m, h, w = maps.shape
    idx = np.asarray(py) * w + np.asarray(px)
    around = maps.reshape(-1).take(idx + _neighbour_index(m, h, w), mode="clip")
    offsets = np.where(np.asarray(active), _quarter_steps(around, _peak_cells(h, w)[2, idx]), 0.0)
    return offsets[0], offsets[1]


def _dark_steps(flat: np.ndarray, idx: np.ndarray, active: np.ndarray, h: int, w: int, kernel: int) -> np.ndarray:
    """flat float32 [M, H*W], peak indices [M], active bool [M] -> Taylor offsets float64 [2, M] (x, y) to add.

    0 where `active` is False or rule 3 does not refine (peak within 2 of the border, singular or non-finite step).
    """
    geo = _dark_geometry(h, w, kernel)
    m, size = len(idx), geo.row_start.shape[1]
    py, px = np.divmod(idx, w)
    # The raw window around each peak, [M, S, S], read within the map; -Inf is read as -1e300 so that a zero
    # weight or factor cannot turn it into NaN (any blurred value it reaches still lands on the log floor). A map
    # holding +Inf or NaN has a +Inf or NaN peak, whose step is rejected whatever the window holds.
    rows = geo.row_start[py] + _neighbour_index(m, h, w)[2, :, None]  # + each map's first pixel
    window = flat.ravel().take(rows[:, :, None] + geo.col_index[px][:, None, :])
    window = np.maximum(window, NEG_INF_STAND_IN, dtype=np.float64)
    # Separable blur as two matrix products (float64): along x within each window row, then along y.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        window *= geo.col_inside[px][:, None, :]  # zero padding, columns (+Inf * 0: that map's step is rejected)
        along_x = (window.reshape(m * size, size) @ geo.blur).reshape(m, size, 5)  # [m, row, x offset]
        along_x *= geo.row_inside[py][:, :, None]  # zero padding, rows
        blurred = along_x.transpose(0, 2, 1).reshape(m * 5, size) @ geo.blur  # [m, x offset, y offset]
        p = np.log(np.maximum(blurred.reshape(m, 25)[:, geo.taps], LOG_FLOOR))
        d = geo.stencils @ p.T  # [8, M]: dyy, dxx, dx, dy, dxy, dxy, dy, dx (rows the formulas pair up)
        det = d[1] * d[0] - d[4] * d[5]  # dxx * dyy - dxy * dxy
        step = (d[0:2] * d[2:4] - d[4:6] * d[6:8]) / det  # (dyy * dx - dxy * dy, dxx * dy - dxy * dx) / det
    refined = active & geo.refinable[idx] & np.isfinite(det) & (det != 0) & np.isfinite(step).all(axis=0)
    return np.where(refined, -step, 0.0)


def refine_dark(maps: np.ndarray, px: np.ndarray, py: np.ndarray, active: np.ndarray,
                kernel: int = DEFAULT_DARK_KERNEL) -> tuple[np.ndarray, np.ndarray]:
    """DARK Taylor steps (float64 [M] each) to add to (px, py); 0 where `active` is False or rule 3 says."""
    _check_dark_kernel(kernel)
    m, h, w = maps.shape
    idx = np.asarray(py) * w + np.asarray(px)
    offsets = _dark_steps(maps.reshape(m, h * w), idx, np.asarray(active, bool), h, w, kernel)
    return offsets[0], offsets[1]


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
    flat = maps.reshape(n * k, h * w)
    idx = flat.argmax(axis=1)  # rule 1
    if NATIVE_FINISH:
        out = np.empty((n, k, 3), np.float32)
        weights = _blur_weights(dark_kernel) if refine == "dark" else None
        _peaks_native.finish(maps, idx, h, w, k, REFINE_MODES.index(refine), affine, out, weights)
        return out
    return _finish_in_numpy(maps, idx, affine, refine, dark_kernel)


def _finish_in_numpy(maps: np.ndarray, idx: np.ndarray, affine: np.ndarray | None, refine: str,
                     dark_kernel: int) -> np.ndarray:
    """Rules 2-4 from the peak indices: maps float32 [N, K, H, W] (C order), idx [N*K] as argmax gives them.

    _peaks_native.finish computes the same: bit for bit for "none" and "quarter", DARK's blur summed in another
    order (tests/test_heatmap_native.py).
    """
    n, k, h, w = maps.shape
    flat = maps.reshape(n * k, h * w)
    # (The array methods below skip the Python-level wrappers of their np.* functions: a crop is only 17 maps.)
    around = flat.ravel().take(idx + _neighbour_index(n * k, h, w), mode="clip")  # [5, M]: left, up, peak, right, down
    score = around[2]
    found = score > 0  # rule 2 (False for NaN): a map without a peak looks up cell 0, (0, 0) and no quarter step
    cells = _peak_cells(h, w).take(idx * found, axis=1)  # [3, M]: x, y, quarter step
    if refine == "quarter":
        x, y = cells[0:2] + _quarter_steps(around, cells[2])
    elif refine == "dark":
        x, y = cells[0:2] + _dark_steps(flat, idx, found, h, w, dark_kernel)
    else:
        x, y = cells[0], cells[1]
    x, y = x.reshape(n, k, 1), y.reshape(n, k, 1)
    out = np.empty((n, k, 3), np.float32)
    if affine is None:
        out[..., 0:1], out[..., 1:2] = x, y
    else:  # rule 4: (m00*x + m01*y) + m02 in float64, both rows of each crop's matrix at once, then float32
        m = affine[:, None]  # [N, 1, 2 (row r), 3 (column)]
        image = x * m[..., 0]
        image += y * m[..., 1]
        np.add(image, m[..., 2], out=out[..., :2], casting="same_kind")  # float64 sum, stored as float32
    out[..., 2] = score.reshape(n, k)
    return out
