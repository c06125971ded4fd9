"""The heatmap decode kernel (kernels/heatmap_decode.cuh) against the NumPy reference heatmap_decode.decode_heatmaps.

Every test runs on the CPU emulation (the same kernel source compiled by g++) and, marked `gpu`, on a real GPU.
Peaks, scores and NaN positions must match exactly; coordinates within 1e-4 px (quarter and none are exact by
construction; DARK sums in float64 in another order than NumPy's einsum).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pose_edge.kernels.launch import HeatmapDecoder

from pose_edge.errors import PoseEdgeError
from pose_edge.runtime.heatmap_decode import decode_heatmaps

MODES = ("none", "quarter", "dark")


@pytest.fixture(scope="module", params=["emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "emulated":
        from pose_edge.kernels.emulator import EmulatedDevice

        if shutil.which("g++") is None:
            pytest.skip("the CPU emulation needs g++ (C++20)")
        yield EmulatedDevice()
    else:
        from pose_edge.kernels.cuda_device import CudaDevice

        with CudaDevice() as dev:
            yield dev


def assert_matches(got: np.ndarray, ref: np.ndarray, atol: float = 1e-4) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(got[..., 2], ref[..., 2])  # the peak value itself, bit for bit
    np.testing.assert_allclose(got[..., :2], ref[..., :2], rtol=0, atol=atol)


def run_both(device, heatmaps, affine=None, refine="quarter", kernel=11):
    got = HeatmapDecoder(device, refine, kernel)(heatmaps, affine)
    ref = decode_heatmaps(heatmaps, affine, refine, kernel)
    return got, ref


def gaussian_maps(rng, n, k, h, w, sigma=2.0, noise=0.01):
    """Peaks like a trained network's: a Gaussian at a random sub-pixel spot (sometimes off the map) plus noise."""
    ys, xs = np.mgrid[0:h, 0:w]
    cx = rng.uniform(-2, w + 1, (n, k, 1, 1))
    cy = rng.uniform(-2, h + 1, (n, k, 1, 1))
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) * rng.uniform(0.1, 1.0, (n, k, 1, 1))
    return (maps + rng.normal(0, noise, maps.shape)).astype(np.float32)


def random_affine(rng, n):
    return np.stack([[[4 * rng.uniform(0.5, 2), rng.uniform(-0.3, 0.3), rng.uniform(0, 600)],
                      [rng.uniform(-0.3, 0.3), 4 * rng.uniform(0.5, 2), rng.uniform(0, 400)]] for _ in range(n)])


@pytest.mark.parametrize("refine", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_trained_looking_maps_match_reference(device, refine, dtype):
    rng = np.random.default_rng(1)
    maps = gaussian_maps(rng, 6, 17, 64, 48).astype(dtype)
    got, ref = run_both(device, maps, random_affine(rng, 6), refine)
    assert_matches(got, ref)
    if refine != "dark":
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("refine", MODES)
def test_uniform_noise_maps_match_reference(device, refine):
    # Random maps make DARK's Hessian arbitrary (near-singular, indefinite): the step rules must still agree.
    rng = np.random.default_rng(2)
    maps = rng.random((4, 17, 32, 24), dtype=np.float32)
    got, ref = run_both(device, maps, None, refine)
    assert_matches(got, ref)


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 9, 11, 13, 15, 17])
def test_every_dark_kernel_size(device, kernel):
    rng = np.random.default_rng(kernel)
    maps = gaussian_maps(rng, 2, 5, 40, 30, sigma=max(1.0, (kernel + 1) / 6))
    got, ref = run_both(device, maps, random_affine(rng, 2), "dark", kernel)
    assert_matches(got, ref)


@pytest.mark.parametrize("refine", MODES)
def test_adversarial_maps(device, refine):
    h, w = 12, 10
    maps = []

    def new(fill=0.0):
        m = np.full((h, w), fill, np.float32)
        maps.append(m)
        return m

    new(0.0)  # constant zero: no peak, (0, 0)
    new(1.0)  # constant positive: first pixel wins the tie, on the corner
    new(-1.0)  # constant negative: no peak
    m = new(0.1)
    m[5, 3] = m[7, 6] = 2.0  # tie between interior maxima: the first in row-major order
    m = new(0.1)
    m[5, 4] = 2.0
    m[5, 3] = m[5, 5] = 1.0  # equal neighbours: no quarter offset in x
    for y, x in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, 5), (h - 1, 5), (6, 0), (6, w - 1),
                 (1, 5), (6, 1), (h - 2, 5), (6, w - 2), (2, 2), (h - 3, w - 3)]:
        m = new(0.05)
        m[y, x] = 3.0  # maxima on the border and one or two pixels in: the refinement windows stop here
        if 0 < x < w - 1:
            m[y, x + 1] = 1.0
    m = new(0.1)
    m[4, 4] = np.nan  # a NaN wins the argmax; the coordinate is (0, 0), the score NaN
    m = new(np.nan)  # all NaN
    m = new(0.1)
    m[6, 5] = np.inf  # +Inf peak: quarter sees +-Inf differences, DARK's log turns Inf - Inf into NaN
    m = new(0.1)
    m[6, 5] = np.inf
    m[2, 3] = np.inf  # two +Inf: the first wins
    m = new(0.1)
    m[6, 5] = 1.0
    m[6, 4] = m[6, 6] = m[5, 5] = m[7, 5] = -np.inf  # NaN differences count as 0
    m = new(-np.inf)
    m[3, 3] = 0.5  # one finite value in a sea of -Inf
    m = new(1e-30)
    m[6, 5] = 1e-20  # tiny positive values: the 1e-10 clamp of DARK's log
    m = new(0.0)
    m[6, 5] = 3e38  # near float32's maximum: the blur overflows nothing in float64
    m = new(0.0)
    m[6, 5] = 1.0
    m[6, 6] = m[6, 4] = 1.0  # a plateau along x: zero second derivative, singular Hessian
    heatmaps = np.stack(maps).reshape(1, len(maps), h, w)
    got, ref = run_both(device, heatmaps, None, refine, 5)
    assert_matches(got, ref)
    got_affine, ref_affine = run_both(device, heatmaps, random_affine(np.random.default_rng(3), 1), refine, 5)
    assert_matches(got_affine, ref_affine)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 7), (1, 2, 5, 1), (2, 2, 2, 3), (1, 3, 5, 5),
                                   (1, 2, 96, 72), (1, 1, 200, 3)])
def test_odd_shapes(device, shape):
    rng = np.random.default_rng(sum(shape))
    maps = rng.normal(size=shape).astype(np.float32)
    for refine in MODES:
        got, ref = run_both(device, maps, None, refine, 3)
        assert_matches(got, ref)


def test_empty_batches(device):
    for shape in [(0, 17, 64, 48), (3, 0, 64, 48)]:
        got = HeatmapDecoder(device, "dark")(np.zeros(shape, np.float32))
        assert got.shape == shape[:2] + (3,)


@pytest.mark.slow
def test_large_batch(device):
    rng = np.random.default_rng(5)
    maps = gaussian_maps(rng, 64, 17, 64, 48).astype(np.float16)
    got, ref = run_both(device, maps, random_affine(rng, 64), "dark")
    assert_matches(got, ref)


def test_large_batch_quarter(device):
    rng = np.random.default_rng(6)
    maps = gaussian_maps(rng, 32, 17, 16, 12)
    got, ref = run_both(device, maps, random_affine(rng, 32), "quarter")
    np.testing.assert_array_equal(got, ref)


def test_float64_input_is_read_as_float32(device):
    rng = np.random.default_rng(7)
    maps = gaussian_maps(rng, 2, 3, 16, 12).astype(np.float64)
    got, ref = run_both(device, maps, None, "dark", 5)
    assert_matches(got, ref)


def test_bad_input_gives_clear_errors(device):
    with pytest.raises(PoseEdgeError, match=r"\[N, K, H, W\]"):
        HeatmapDecoder(device)(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(PoseEdgeError, match="hm_to_image"):
        HeatmapDecoder(device)(np.zeros((2, 3, 4, 4), np.float32), np.zeros((3, 2, 3)))
    with pytest.raises(PoseEdgeError, match="refinement"):
        HeatmapDecoder(device, "taylor")
    with pytest.raises(PoseEdgeError, match="dark_kernel"):
        HeatmapDecoder(device, "dark", 19)
    with pytest.raises(PoseEdgeError, match="float array"):
        HeatmapDecoder(device)(np.zeros((1, 1, 4, 4), np.int32))
