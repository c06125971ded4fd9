"""The NumPy heatmap decoder: sub-pixel accuracy, agreement with literal transcriptions of the reference code, and
every edge rule in its docstring (the CUDA kernel is tested against this module, so the rules must hold)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose_edge.errors import PoseEdgeError
from pose_edge.heatmap_codec import dark_kernel_for_sigma
from pose_edge.runtime.heatmap_decode import dark_blur_weights, decode_heatmaps, find_peaks, refine_dark, refine_quarter

sys.path.insert(0, str(Path(__file__).parent))
import heatmap_decode_before as before  # noqa: E402  (today's decoder, the reference for the fast path)


def gaussian_map(h: int, w: int, cx: float, cy: float, sigma: float) -> np.ndarray:
    """Unnormalised Gaussian (peak 1 at a real-valued centre) on the whole grid, pixel centres at integers."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)).astype(np.float32)


def random_centres(rng, n, h, w, margin):
    return rng.uniform(margin, w - 1 - margin, n), rng.uniform(margin, h - 1 - margin, n)


# ---------------------------------------------------------------------------------------------------------------
# Literal per-map transcriptions of the reference code (SB get_final_preds; DARK gaussian_blur + taylor, with cv2).


def reference_quarter(hm: np.ndarray) -> np.ndarray:
    k_out = np.zeros((hm.shape[0], hm.shape[1], 2))
    for n in range(hm.shape[0]):
        for k in range(hm.shape[1]):
            m = hm[n, k]
            idx = int(np.argmax(m))
            x, y = float(idx % m.shape[1]), float(idx // m.shape[1])
            if m.flat[idx] <= 0:
                x = y = 0.0
            px, py = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            if 1 < px < m.shape[1] - 1 and 1 < py < m.shape[0] - 1:
                diff = np.array([m[py][px + 1] - m[py][px - 1], m[py + 1][px] - m[py - 1][px]])
                x, y = x + np.sign(diff[0]) * 0.25, y + np.sign(diff[1]) * 0.25
            k_out[n, k] = x, y
    return k_out


def reference_dark(hm: np.ndarray, kernel: int) -> np.ndarray:
    hm = hm.astype(np.float64)
    out = np.zeros((hm.shape[0], hm.shape[1], 2))
    border = (kernel - 1) // 2
    h, w = hm.shape[2:]
    for n in range(hm.shape[0]):
        for k in range(hm.shape[1]):
            m = hm[n, k]
            idx = int(np.argmax(m))
            px, py = idx % w, idx // w
            origin_max = m.max()
            padded = np.zeros((h + 2 * border, w + 2 * border))
            padded[border:-border, border:-border] = m
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
            blurred *= origin_max / blurred.max()
            p = np.log(np.maximum(blurred, 1e-10))
            x, y = float(px), float(py)
            if 1 < px < w - 2 and 1 < py < h - 2:
                dx = 0.5 * (p[py][px + 1] - p[py][px - 1])
                dy = 0.5 * (p[py + 1][px] - p[py - 1][px])
                dxx = 0.25 * (p[py][px + 2] - 2 * p[py][px] + p[py][px - 2])
                dxy = 0.25 * (p[py + 1][px + 1] - p[py - 1][px + 1] - p[py + 1][px - 1] + p[py - 1][px - 1])
                dyy = 0.25 * (p[py + 2][px] - 2 * p[py][px] + p[py - 2][px])
                hess = np.array([[dxx, dxy], [dxy, dyy]])
                if dxx * dyy - dxy**2 != 0:
                    offset = -np.linalg.inv(hess) @ np.array([dx, dy])
                    x, y = x + offset[0], y + offset[1]
            out[n, k] = x, y
    return out


def smooth_random_maps(rng, n, k, h, w, sigma):
    """Realistic network-like maps: a few Gaussian bumps of different heights plus mild noise, all positive."""
    maps = np.zeros((n, k, h, w), np.float32)
    for i in range(n):
        for j in range(k):
            for _ in range(rng.integers(1, 4)):
                cx, cy = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
                maps[i, j] += rng.uniform(0.2, 1.0) * gaussian_map(h, w, cx, cy, sigma)
    return maps + rng.uniform(0.0, 0.01, maps.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Accuracy


@pytest.mark.parametrize("h,w,sigma", [(64, 48, 2.0), (96, 72, 3.0), (32, 24, 1.0)])
def test_subpixel_gaussian_decodes_within_tolerance(h, w, sigma):
    """Centres at least 3 sigma from the border: closer, the zero padding of DARK's blur pulls the estimate inwards."""
    rng = np.random.default_rng(0)
    cx, cy = random_centres(rng, 200, h, w, margin=3 * sigma)
    maps = np.stack([gaussian_map(h, w, x, y, sigma) for x, y in zip(cx, cy)])[:, None]
    truth = np.stack([cx, cy], -1)[:, None]

    quarter = decode_heatmaps(maps, refine="quarter")
    assert np.abs(quarter[..., :2] - truth).max() < 0.3
    dark = decode_heatmaps(maps, refine="dark", dark_kernel=dark_kernel_for_sigma(sigma))
    assert np.abs(dark[..., :2] - truth).max() < 0.05
    none = decode_heatmaps(maps, refine="none")
    assert np.abs(none[..., :2] - truth).max() <= 0.5 + 1e-6
    # Refinement must actually help: DARK is far better than the plain argmax on average.
    assert np.abs(dark[..., :2] - truth).mean() < 0.2 * np.abs(none[..., :2] - truth).mean()
    np.testing.assert_allclose(dark[..., 2], maps.reshape(200, 1, -1).max(-1))


def test_affine_maps_heatmap_to_image():
    h, w = 64, 48
    maps = gaussian_map(h, w, 20.0, 30.0, 2.0)[None, None].repeat(2, axis=0)
    m = np.array([[[4.0, 0.0, 10.0], [0.0, 4.0, -5.0]], [[0.0, -2.0, 100.0], [2.0, 0.0, 7.0]]])
    out = decode_heatmaps(maps, m, refine="none")
    np.testing.assert_allclose(out[0, 0, :2], [4 * 20 + 10, 4 * 30 - 5])
    np.testing.assert_allclose(out[1, 0, :2], [-2 * 30 + 100, 2 * 20 + 7])
    assert out.dtype == np.float32 and out.shape == (2, 1, 3)


# ---------------------------------------------------------------------------------------------------------------
# Agreement with the reference code


def test_quarter_matches_reference_transcription():
    rng = np.random.default_rng(1)
    maps = smooth_random_maps(rng, 6, 17, 64, 48, 2.0)
    # Include maps whose peak sits on the border rows/columns the rule excludes.
    maps[0, 0] = gaussian_map(64, 48, 1.0, 30.3, 2.0)
    maps[0, 1] = gaussian_map(64, 48, 46.7, 0.2, 2.0)
    maps[0, 2] = gaussian_map(64, 48, 20.2, 62.9, 2.0)
    ours = decode_heatmaps(maps, refine="quarter")[..., :2]
    np.testing.assert_array_equal(ours, reference_quarter(maps).astype(np.float32))


@pytest.mark.parametrize("kernel,sigma", [(11, 2.0), (17, 3.0)])
def test_dark_matches_reference_transcription(kernel, sigma):
    """Against DARK's own procedure with cv2.GaussianBlur and the max rescale (which only moves the log clamp)."""
    rng = np.random.default_rng(2)
    maps = smooth_random_maps(rng, 4, 17, 64, 48, sigma)
    ours = decode_heatmaps(maps, refine="dark", dark_kernel=kernel)[..., :2]
    np.testing.assert_allclose(ours, reference_dark(maps, kernel), atol=1e-4)


def test_blur_weights_follow_opencv_for_large_kernels():
    """OpenCV uses fixed tables for k <= 9; from 11 on it uses the formula we use everywhere."""
    for k in (11, 13, 17):
        np.testing.assert_allclose(dark_blur_weights(k), cv2.getGaussianKernel(k, 0).ravel(), atol=1e-12)
    assert dark_kernel_for_sigma(1.0) == 3 and dark_kernel_for_sigma(2.0) == 11 and dark_kernel_for_sigma(3.0) == 17


# ---------------------------------------------------------------------------------------------------------------
# Edge rules (the kernel must match these)


def test_ties_take_the_first_index_in_row_major_order():
    m = np.zeros((1, 1, 8, 8), np.float32)
    m[0, 0, 5, 2] = m[0, 0, 3, 6] = m[0, 0, 3, 7] = 1.0
    out = decode_heatmaps(m, refine="none")
    assert out[0, 0].tolist() == [6.0, 3.0, 1.0]


def test_non_positive_constant_and_nan_maps_give_origin_unrefined():
    h, w = 16, 12
    maps = np.zeros((1, 4, h, w), np.float32)
    maps[0, 1] = 0.5  # constant positive: first pixel, at the border, so not refined
    maps[0, 2] = -np.abs(gaussian_map(h, w, 6.3, 8.4, 2.0)) - 0.1  # all negative: peak exists but is not > 0
    maps[0, 3] = gaussian_map(h, w, 6.3, 8.4, 2.0)
    maps[0, 3, 9, 4] = np.nan
    for refine in ("none", "quarter", "dark"):
        out = decode_heatmaps(maps, refine=refine, dark_kernel=3)
        assert out[0, :3, :2].tolist() == [[0, 0]] * 3
        assert out[0, 0, 2] == 0.0 and out[0, 1, 2] == 0.5 and out[0, 2, 2] < 0
        assert out[0, 3, :2].tolist() == [0, 0] and np.isnan(out[0, 3, 2])


def test_infinities():
    h, w = 16, 12
    maps = np.zeros((1, 3, h, w), np.float32)
    maps[0, 0] = gaussian_map(h, w, 5.3, 7.2, 2.0)
    maps[0, 0, 7, 5] = np.inf  # +Inf wins, is reported, and leaves DARK no finite step
    maps[0, 1, 7, 5], maps[0, 1, 7, 4], maps[0, 1, 7, 6] = 1.0, -np.inf, -np.inf  # NaN difference counts as 0
    maps[0, 1, 6, 5] = 0.5
    maps[0, 2] = gaussian_map(h, w, 5.3, 7.2, 2.0)
    maps[0, 2, 8, 6] = -np.inf  # -Inf inside the DARK window is clamped by the log floor: still a finite step
    q = decode_heatmaps(maps, refine="quarter")
    assert q[0, 0].tolist() == [5.25, 7.25, np.inf]  # quarter: the finite neighbours still decide
    assert q[0, 1, :2].tolist() == [5.0, 6.75]
    d = decode_heatmaps(maps, refine="dark", dark_kernel=3)
    assert d[0, 0].tolist() == [5.0, 7.0, np.inf]
    assert np.isfinite(d[0, 2, :2]).all() and d[0, 2, 0] != 5.0


def test_border_rules():
    h, w = 20, 16
    # Peaks at x = 1 (quarter excluded: reference condition 1 < x), x = 2 (quarter refined; DARK refined: 2 <= x).
    at1 = gaussian_map(h, w, 1.3, 10.2, 2.0)
    at2 = gaussian_map(h, w, 2.3, 10.2, 2.0)
    at_last = gaussian_map(h, w, w - 2.3, 10.2, 2.0)  # peak at x = W-2: quarter refined, DARK not
    maps = np.stack([at1, at2, at_last])[None]
    q = decode_heatmaps(maps, refine="quarter")[0]
    d = decode_heatmaps(maps, refine="dark", dark_kernel=5)[0]
    assert q[0, 0] == 1.0 and q[1, 0] == 2.25 and q[2, 0] == w - 2 - 0.25
    assert q[0, 1] == 10.0  # y not refined either when x is excluded
    assert d[0, 0] == 1.0 and d[1, 0] != 2.0 and d[2, 0] == w - 2


def test_float16_input_decodes_like_its_float32_values():
    rng = np.random.default_rng(3)
    maps = smooth_random_maps(rng, 3, 17, 64, 48, 2.0).astype(np.float16)
    for refine in ("quarter", "dark"):
        np.testing.assert_array_equal(decode_heatmaps(maps, refine=refine),
                                      decode_heatmaps(maps.astype(np.float32), refine=refine))


def test_bad_inputs_raise_one_line_errors():
    maps = np.zeros((2, 17, 8, 6), np.float32)
    with pytest.raises(PoseEdgeError, match=r"\[N, K, H, W\]"):
        decode_heatmaps(maps[0])
    with pytest.raises(PoseEdgeError, match="float"):
        decode_heatmaps(maps.astype(np.int32))
    with pytest.raises(PoseEdgeError, match="hm_to_image"):
        decode_heatmaps(maps, np.zeros((1, 2, 3)))
    with pytest.raises(PoseEdgeError, match="refine"):
        decode_heatmaps(maps, refine="taylor")
    with pytest.raises(PoseEdgeError, match="odd"):
        decode_heatmaps(maps, refine="dark", dark_kernel=4)
    assert decode_heatmaps(np.zeros((0, 17, 8, 6), np.float32)).shape == (0, 17, 3)


# ---------------------------------------------------------------------------------------------------------------
# The fast decoder against today's (tests/heatmap_decode_before.py): cached index tables, the DARK blur as matrix
# products over a window read within the map. none and quarter must be bit for bit; DARK's float64 blur sums in
# another order, which can move a coordinate by float32 rounding at most (in practice they are bit for bit too).



def assert_same_as_before(maps, affine=None, refine="quarter", kernel=11):
    got = decode_heatmaps(maps, affine, refine, kernel)
    ref = before.decode_heatmaps(maps, affine, refine, kernel)
    assert got.dtype == ref.dtype == np.float32 and got.shape == ref.shape
    if refine == "dark":
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(got[..., 2], ref[..., 2])
        np.testing.assert_allclose(got[..., :2], ref[..., :2], rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, ref)
    return got, ref


def random_affine(rng, n):
    return np.stack([[[4 * rng.uniform(0.5, 2), rng.uniform(-0.3, 0.3), rng.uniform(0, 600)],
                      [rng.uniform(-0.3, 0.3), 4 * rng.uniform(0.5, 2), rng.uniform(0, 400)]] for _ in range(n)])


def network_like_maps(rng, n, k=17, h=64, w=48, sigma=2.0):
    """A Gaussian at a sub-pixel spot per map, sometimes at or past the border, plus noise (some values < 0)."""
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = rng.uniform(-2, w + 1, (n, k, 1, 1)), rng.uniform(-2, h + 1, (n, k, 1, 1))
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) * rng.uniform(0.1, 1.0, (n, k, 1, 1))
    return (maps + rng.normal(0, 0.01, maps.shape)).astype(np.float32)


@pytest.mark.parametrize("crops", [1, 3, 17, 64])
@pytest.mark.parametrize("refine", ["none", "quarter", "dark"])
def test_fast_decode_equals_before_on_network_like_maps(crops, refine):
    rng = np.random.default_rng(crops)
    maps = network_like_maps(rng, crops)
    got, ref = assert_same_as_before(maps, random_affine(rng, crops), refine)
    assert_same_as_before(maps.astype(np.float16), None, refine)
    if refine == "dark":
        np.testing.assert_array_equal(got, ref)  # what happens in practice


@pytest.mark.parametrize("kernel", [1, 3, 5, 11, 17])
def test_fast_dark_equals_before_for_every_kernel_and_map_size(kernel):
    rng = np.random.default_rng(kernel)
    for h, w in ((64, 48), (96, 72), (32, 24), (7, 9), (5, 5), (3, 4), (1, 1)):
        maps = network_like_maps(rng, 3, 5, h, w, sigma=max(1.0, (kernel + 1) / 6))
        assert_same_as_before(maps, random_affine(rng, 3), "dark", kernel)
        assert_same_as_before(rng.normal(0, 1, (2, 4, h, w)).astype(np.float32), None, "dark", kernel)


def test_fast_decode_equals_before_on_noise_maps():
    rng = np.random.default_rng(21)
    for maps in (rng.random((4, 17, 32, 24), dtype=np.float32), rng.normal(0, 1, (4, 17, 64, 48)).astype(np.float32)):
        for refine in ("none", "quarter", "dark"):
            assert_same_as_before(maps, random_affine(rng, 4), refine)


def test_fast_decode_equals_before_on_adversarial_maps():
    """Peaks at every distance from every border, non-finite values at and around peaks, ties, flat maps."""
    h, w = 20, 16
    rng = np.random.default_rng(22)
    maps = []
    for d in range(0, 10):  # the peak d pixels from each border in turn, x and y
        for x, y in ((d, h // 2), (w - 1 - d, h // 2), (w // 2, d), (w // 2, h - 1 - d), (d, d)):
            maps.append(gaussian_map(h, w, x + rng.uniform(-0.3, 0.3), y + rng.uniform(-0.3, 0.3), 2.0))
    base = gaussian_map(h, w, 7.3, 9.6, 2.0)
    for value in (np.nan, np.inf, -np.inf):
        for dy, dx in ((0, 0), (0, 1), (1, 0), (-1, -1), (2, 0), (0, -2), (5, 5), (-7, 3)):
            m = base.copy()
            m[10 + dy, 7 + dx] = value
            maps.append(m)
        m = base.copy()
        m[10, 6] = m[10, 8] = value  # both neighbours
        maps.append(m)
    maps += [np.zeros((h, w), np.float32), np.full((h, w), -1.0, np.float32), np.full((h, w), 0.5, np.float32)]
    tie = np.zeros((h, w), np.float32)
    tie[5, 4] = tie[3, 9] = tie[12, 2] = 1.0
    maps.append(tie)
    maps = np.stack(maps).astype(np.float32)[None]
    for refine in ("none", "quarter", "dark"):
        for kernel in (3, 11, 17):
            assert_same_as_before(maps, None, refine, kernel)
            assert_same_as_before(maps, random_affine(rng, 1), refine, kernel)


def test_public_refinement_functions_equal_before():
    rng = np.random.default_rng(23)
    maps = network_like_maps(rng, 2, 17, 64, 48).reshape(34, 64, 48)
    idx, score = find_peaks(maps)
    ref_idx, ref_score = before.find_peaks(maps)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(score, ref_score)
    px, py, active = idx % 48, idx // 48, score > 0.3
    for got, ref in ((refine_quarter(maps, px, py, active), before.refine_quarter(maps, px, py, active)),
                     (refine_dark(maps, px, py, active, 11), before.refine_dark(maps, px, py, active, 11))):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    assert (refine_dark(maps, px, py, active, 11)[0] != 0).sum() > 10
