"""The C finish of the heatmap decode (pose_edge/runtime/_peaks_native.c) against the NumPy path it stands in for:
bit for bit for "none" and "quarter", DARK within a float32 rounding with the same maps refined, on every map shape
and edge case; never reading out of bounds on a wrong call; built wherever CI runs.

(tests/test_heatmap_decode.py checks decode_heatmaps, which runs the C finish where it is built, against the
decoder as it was before, on network-like, noise and adversarial maps.)
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pose_edge.runtime import heatmap_decode
from pose_edge.runtime.heatmap_decode import decode_heatmaps

native = pytest.mark.skipif(not heatmap_decode.NATIVE_FINISH, reason="the C finish is not built here (setup.py)")


def in_numpy(maps, affine, refine, kernel=11):
    """decode_heatmaps with the C finish switched off."""
    saved = heatmap_decode.NATIVE_FINISH
    heatmap_decode.NATIVE_FINISH = False
    try:
        return decode_heatmaps(maps, affine, refine, kernel)
    finally:
        heatmap_decode.NATIVE_FINISH = saved


def assert_same_as_numpy(maps, affine, kernels=(3, 11, 17)):
    """none and quarter bit for bit; DARK (each blur kernel) within float32 rounding, refining the same maps."""
    for refine in ("none", "quarter"):
        got, ref = decode_heatmaps(maps, affine, refine), in_numpy(maps, affine, refine)
        assert got.dtype == ref.dtype == np.float32 and got.shape == ref.shape
        assert got.tobytes() == ref.tobytes(), refine  # NaN payloads and signed zeros included
    unrefined = decode_heatmaps(maps, affine, "none")
    for kernel in kernels:
        got, ref = decode_heatmaps(maps, affine, "dark", kernel), in_numpy(maps, affine, "dark", kernel)
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_array_equal(got[..., 2], ref[..., 2])
        np.testing.assert_array_equal(got[..., :2] != unrefined[..., :2], ref[..., :2] != unrefined[..., :2])
        np.testing.assert_allclose(got[..., :2], ref[..., :2], rtol=1e-6, atol=1e-6)


def random_affine(rng, n):
    m = rng.normal(0, 1, (n, 2, 3)) * rng.choice([1e-3, 1.0, 7.0, 1e4], (n, 2, 3))
    return m


def test_the_c_finish_is_built_where_ci_requires_it():
    if os.environ.get("POSE_EDGE_REQUIRE_NATIVE") != "1":
        pytest.skip("POSE_EDGE_REQUIRE_NATIVE is not set (.ci/run sets it)")
    assert heatmap_decode.NATIVE_FINISH, "pose_edge.runtime._peaks_native did not build (setup.py; see pip's log)"


@native
@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (6, 1), (2, 2), (3, 3), (4, 5), (5, 4), (64, 48), (96, 72)])
def test_equals_numpy_on_random_maps_of_every_shape(h, w):
    rng = np.random.default_rng(h * 100 + w)
    for n, k in ((1, 17), (3, 5), (8, 1)):
        assert_same_as_numpy(rng.normal(0, 1, (n, k, h, w)).astype(np.float32), random_affine(rng, n))
        assert_same_as_numpy(rng.random((n, k, h, w), dtype=np.float32), None)
        # few distinct values: ties between neighbours and between peaks
        assert_same_as_numpy(rng.integers(-2, 3, (n, k, h, w)).astype(np.float16), random_affine(rng, n))


@native
def test_equals_numpy_on_non_finite_values_at_and_around_peaks():
    rng = np.random.default_rng(5)
    h, w = 9, 8
    maps = rng.random((40, h, w), dtype=np.float32)
    for i, value in enumerate([np.nan, np.inf, -np.inf, 0.0, -1.0] * 8):
        y, x = rng.integers(0, h), rng.integers(0, w)
        maps[i, y, x] = 2.0  # the peak...
        for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0), (0, 0))[: 1 + i % 5]:  # ...and its neighbours, then itself
            maps[i, np.clip(y + dy, 0, h - 1), np.clip(x + dx, 0, w - 1)] = value
    maps = maps.reshape(5, 8, h, w)
    assert_same_as_numpy(maps, random_affine(rng, 5))
    assert_same_as_numpy(maps, None)
    assert_same_as_numpy(np.full((1, 3, h, w), np.nan, np.float32), None)
    assert_same_as_numpy(np.full((1, 3, h, w), -np.inf, np.float32), random_affine(rng, 1))


@native
def test_no_fused_multiply_add_in_the_mapping():
    """Cases where rounding a product before the add, as NumPy does, and fusing it (an FMA) give different float32
    results: with m = fl(1/3), 3*m = 1 - 2^-54 exactly, which rounds to 1.0 in float64; added to c = -0.75 + 1.5*2^-25
    the separate sum is 0.25 + 1.5*2^-25, a float32 tie that rounds up to 0.25 + 2^-24, while the fused sum lies 2^-54
    below the tie and rounds down to 0.25 + 2^-25. The inexact product is y*m01 in crop 0 and x*m00 in crop 1, so a
    build that fuses either product fails here."""
    third, c = 1.0 / 3.0, -0.75 + 1.5 * 2.0**-25
    maps = np.zeros((2, 1, 5, 6), np.float32)
    maps[0, 0, 3, 1] = maps[1, 0, 1, 3] = 1.0  # peaks at (1, 3) and (3, 1): row and column 1 are never refined
    affine = np.array([[[c, third, 0.0], [c, third, 0.0]], [[third, c, 0.0], [third, c, 0.0]]])
    expected = np.float32(0.25 + 2.0**-24)
    for refine in ("none", "quarter"):
        assert (in_numpy(maps, affine, refine)[:, 0, :2] == expected).all()
        assert (decode_heatmaps(maps, affine, refine)[:, 0, :2] == expected).all()


@native
def test_dark_on_network_like_maps_is_bit_for_bit_in_practice():
    """Gaussian peaks with noise, as a trained network gives them: the two blur orders round to the same float32
    coordinates almost everywhere (the tolerance above is for what float64 rounding can do, not what it does)."""
    rng = np.random.default_rng(7)
    h, w = 64, 48
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = rng.uniform(1, w - 2, (32, 17, 1, 1)), rng.uniform(1, h - 2, (32, 17, 1, 1))
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0) * rng.uniform(0.2, 1.0, (32, 17, 1, 1))
    maps = (maps + rng.normal(0, 0.01, maps.shape)).astype(np.float32)
    affine = np.tile([[[4.0, 0.0, 100.0], [0.0, 4.0, 50.0]]], (32, 1, 1))
    got, ref = decode_heatmaps(maps, affine, "dark"), in_numpy(maps, affine, "dark")
    assert (got[..., :2] == ref[..., :2]).mean() > 0.99
    assert (got[..., :2] != decode_heatmaps(maps, affine, "none")[..., :2]).mean() > 0.9  # DARK did refine


@native
def test_wrong_buffers_raise_instead_of_reading_out_of_bounds():
    finish = heatmap_decode._peaks_native.finish
    maps = np.ones((2, 3, 4, 5), np.float32)
    peaks = np.zeros(6, np.int64)
    out = np.empty((2, 3, 3), np.float32)
    blur = np.full(3, 1 / 3)
    finish(maps, peaks, 4, 5, 3, 1, None, out, None)  # right calls
    finish(maps, peaks, 4, 5, 3, 2, None, out, blur)
    np.testing.assert_array_equal(out[..., 2], 1.0)
    bad_calls = {
        "maps too short": (maps[:1], peaks, 4, 5, 3, 1, None, out, None),
        "map shape": (maps, peaks, 5, 5, 3, 1, None, out, None),
        "maps per crop": (maps, peaks, 4, 5, 4, 1, None, out, None),
        "output too short": (maps, peaks, 4, 5, 3, 1, None, out[:1], None),
        "affine rows": (maps, peaks, 4, 5, 3, 1, np.zeros((1, 2, 3)), out, None),
        "peak past the map": (maps, np.full(6, 20, np.int64), 4, 5, 3, 1, None, out, None),
        "negative peak": (maps, np.full(6, -1, np.int64), 4, 5, 3, 1, None, out, None),
        "unknown refine": (maps, peaks, 4, 5, 3, 3, None, out, None),
        "dark without weights": (maps, peaks, 4, 5, 3, 2, None, out, None),
        "weights without dark": (maps, peaks, 4, 5, 3, 0, None, out, blur),
        "even blur": (maps, peaks, 4, 5, 3, 2, None, out, np.full(4, 0.25)),
        "blur wider than 17": (maps, peaks, 4, 5, 3, 2, None, out, np.full(19, 1 / 19)),
    }
    for name, args in bad_calls.items():
        with pytest.raises(ValueError, match="finish: "):
            finish(*args)
    with pytest.raises(TypeError):  # a read-only output
        finish(maps, peaks, 4, 5, 3, 1, None, np.frombuffer(bytes(72), np.float32), None)
