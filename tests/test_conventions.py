"""Top-down geometry conventions: ours, the original Simple Baselines' and DarkPose's (ModelMeta.convention).

The originals' geometry is restated here from their code, independently of pose_edge.geometry and heatmap_codec:
their crop transform is a similarity fixed by three points (the box centre, the point half a crop width above it, and
the point half a width left of that one) sent to the output's centre and the same construction there; Simple
Baselines' training targets sit at round(x_in / 4), DarkPose's at the crop transform taken to the heatmap size
directly; Simple Baselines decodes with the quarter step and shifts flipped heatmaps one column right, DarkPose with
DARK (cv2.GaussianBlur at its config's kernel) and no shift. The tests encode keypoints the way each original builds
its training targets and decode them through pose-edge's path for that convention (crop_geometry and codec_for, the
NumPy decoder and the emulated CUDA kernel), and run an imported model's ONNX through pose_edge.load to check that
the crops and keypoints are the original's.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import pose_edge
from pose_edge.cli import main
from pose_edge.errors import ArtifactError, DataError, PoseEdgeError
from pose_edge.geometry import CONVENTIONS
from pose_edge.heatmap_codec import GaussianHeatmapCodec
from pose_edge.keypoints import FLIP_PERM, NUM_KEYPOINTS
from pose_edge.model_meta import GraphInfo, InputSpec, ModelMeta
from pose_edge.models import build_model, get_preset, model_meta
from pose_edge.models.published import import_checkpoint, with_convention
from pose_edge.runtime.heatmap_decode import dark_blur_weights, decode_heatmaps
from pose_edge.runtime.topdown import codec_for, crop_geometry

PADDING = 1.25


# ----------------------------------------------------------------------------------- the originals, restated


def original_center_size(box, input_wh, kind):
    """The originals' box [x, y, w, h] -> (centre, padded aspect-fixed size in image px): DarkPose counts the last
    pixel of the box as inside (x + (w - 1)/2), Simple Baselines (and pose-edge) take x + w/2."""
    x, y, w, h = (float(v) for v in box)
    if kind == "darkpose":
        center = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
    else:
        center = np.array([x + w / 2, y + h / 2])
    aspect = input_wh[0] / input_wh[1]
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return center, np.array([w, h]) * PADDING


def _three_points(center, half):
    """centre, the point `half` above it, and the point `half` left of that one (a right angle at the second)."""
    up = center + np.array([0.0, -half])
    return np.stack([center, up, up + np.array([-half, 0.0])]).astype(np.float32)


def original_transform(box, input_wh, out_wh, kind, inverse=False):
    """The originals' image -> output affine [2, 3] for a person box: output = the input crop (out_wh = input_wh)
    or the heatmap (out_wh = heatmap size); inverse=True gives output -> image (their transform_preds)."""
    center, size = original_center_size(box, input_wh, kind)
    w_out, h_out = out_wh
    if kind == "darkpose":
        src = _three_points(center, (size[0] - 1) / 2)
        dst = _three_points(np.array([(w_out - 1) / 2, (h_out - 1) / 2]), (w_out - 1) / 2)
    else:
        src = _three_points(center, size[0] / 2)
        dst = _three_points(np.array([w_out / 2, h_out / 2]), w_out / 2)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def gaussian(mu_x, mu_y, h, w, sigma):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - mu_x) ** 2 + (ys - mu_y) ** 2) / (2 * sigma**2))


def original_quarter(heatmaps, back):
    """Simple Baselines' decode of [P, K, H, W]: argmax ((0, 0) for a map without a positive value), the quarter step
    toward the higher neighbour where 1 < px < W-1 and 1 < py < H-1, then its heatmap -> image affine per crop (back
    [P, 2, 3])."""
    p, k, h, w = heatmaps.shape
    out = np.zeros((p, k, 2))
    for i in range(p):
        for j in range(k):
            m = heatmaps[i, j]
            py, px = divmod(int(np.argmax(m)), w) if m.max() > 0 else (0, 0)  # no positive peak: (0, 0)
            x, y = float(px), float(py)
            if 1 < px < w - 1 and 1 < py < h - 1:
                x += 0.25 * np.sign(m[py, px + 1] - m[py, px - 1])
                y += 0.25 * np.sign(m[py + 1, px] - m[py - 1, px])
            out[i, j] = back[i] @ np.array([x, y, 1.0])
    return out


def original_dark(heatmaps, back, kernel):
    """DarkPose's decode: each map blurred by cv2.GaussianBlur((kernel, kernel), 0) with zero padding and rescaled to
    its maximum, log of max(., 1e-10), one Newton step where 1 < px < W-2 and 1 < py < H-2, then the affine."""
    p, k, h, w = heatmaps.shape
    r = (kernel - 1) // 2
    out = np.zeros((p, k, 2))
    for i in range(p):
        for j in range(k):
            m = heatmaps[i, j].astype(np.float64)
            py, px = divmod(int(np.argmax(m)), w) if m.max() > 0 else (0, 0)
            padded = np.zeros((h + 2 * r, w + 2 * r))
            padded[r:r + h, r:r + w] = m
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[r:r + h, r:r + w]
            lg = np.log(np.maximum(blurred * m.max() / blurred.max(), 1e-10))
            x, y = float(px), float(py)
            if 1 < px < w - 2 and 1 < py < h - 2:
                gx, gy = (lg[py, px + 1] - lg[py, px - 1]) / 2, (lg[py + 1, px] - lg[py - 1, px]) / 2
                hxx = (lg[py, px + 2] - 2 * lg[py, px] + lg[py, px - 2]) / 4
                hyy = (lg[py + 2, px] - 2 * lg[py, px] + lg[py - 2, px]) / 4
                hxy = (lg[py + 1, px + 1] - lg[py - 1, px + 1] - lg[py + 1, px - 1] + lg[py - 1, px - 1]) / 4
                hess = np.array([[hxx, hxy], [hxy, hyy]])
                if np.linalg.det(hess) != 0:
                    x, y = np.array([x, y]) - np.linalg.solve(hess, [gx, gy])
            out[i, j] = back[i] @ np.array([x, y, 1.0])
    return out


def original_flip_average(heatmaps, flipped, shift):
    """Average with the flipped crops' heatmaps: reversed along W, left/right channels swapped, and for Simple
    Baselines moved one column right (column 0 kept)."""
    back = flipped[:, FLIP_PERM, :, ::-1].copy()
    if shift:
        back[..., 1:] = back[..., :-1].copy()
    return (heatmaps + back) / 2


# ------------------------------------------------------------------------- round trip: encode the original's way

INPUT_WH = {"256x192": (192, 256), "128x96": (96, 128)}
SIGMA = {"256x192": 2.0, "128x96": 1.0}
BOXES = np.array([[50.3, 40.7, 83.2, 190.5], [300.0, 120.25, 140.5, 95.0]])  # [x, y, w, h], one tall, one wide


def encode_as_trained(kind, input_wh, sigma, rng):
    """Keypoints (image px [P, K, 2]) and their heatmaps [P, K, h, w] made the way `kind` made training targets.
    Keypoints are chosen so that their targets peak on whole heatmap pixels (Simple Baselines rounds them there), far
    enough inside the map that DARK's blur does not reach its zero padding."""
    w_in, h_in = input_wh
    w_hm, h_hm = w_in // 4, h_in // 4
    margin = int(3 * sigma) + (6 if sigma > 1 else 2)  # 3 sigma plus the blur radius (11 or 3 taps)
    mu = np.stack([rng.integers(margin, w_hm - margin, (len(BOXES), NUM_KEYPOINTS)),
                   rng.integers(margin, h_hm - margin, (len(BOXES), NUM_KEYPOINTS))], -1).astype(np.float64)
    kps = np.zeros_like(mu)
    maps = np.zeros((len(BOXES), NUM_KEYPOINTS, h_hm, w_hm), np.float32)
    for p, box in enumerate(BOXES):
        if kind == "pose_edge":  # our training: the codec encodes input pixels
            codec = GaussianHeatmapCodec((h_in, w_in), 4, sigma)
            xy_in = mu[p] * 4 + 1.5
            center, size = original_center_size(box, input_wh, "simple_baselines")
            k = w_in / size[0]
            kps[p] = (xy_in - np.array([(w_in - 1) / 2, (h_in - 1) / 2])) / k + center
            maps[p] = codec.encode(np.concatenate([xy_in, np.full((NUM_KEYPOINTS, 1), 2.0)], 1))[0]
            continue
        if kind == "simple_baselines":  # targets at int(x_in / 4 + 0.5): x_in = 4 mu lands there exactly
            back = original_transform(box, input_wh, input_wh, kind, inverse=True)
            kps[p] = (back[:, :2] @ (4 * mu[p]).T).T + back[:, 2]
            x_in = (original_transform(box, input_wh, input_wh, kind)[:, :2] @ kps[p].T).T \
                + original_transform(box, input_wh, input_wh, kind)[:, 2]
            peaks = np.floor(x_in / 4 + 0.5)
        else:  # DarkPose: the keypoint through the transform to the heatmap size, unrounded
            back = original_transform(box, input_wh, (w_hm, h_hm), kind, inverse=True)
            kps[p] = (back[:, :2] @ mu[p].T).T + back[:, 2]
            fwd = original_transform(box, input_wh, (w_hm, h_hm), kind)
            peaks = (fwd[:, :2] @ kps[p].T).T + fwd[:, 2]
        for j in range(NUM_KEYPOINTS):
            maps[p, j] = gaussian(peaks[j, 0], peaks[j, 1], h_hm, w_hm, sigma)
    return kps, maps


@pytest.fixture(scope="module")
def emulated():
    if shutil.which("g++") is None:
        pytest.skip("the CPU emulation needs g++ (C++20)")
    from pose_edge.kernels.emulator import EmulatedDevice

    return EmulatedDevice()


def _meta(convention, size):
    h, w = INPUT_WH[size][::-1]
    meta = ModelMeta("simple_baseline", f"sb-{size}", InputSpec(h, w), heatmap_stride=4,
                     extra={"sigma": SIGMA[size]})
    return meta if convention == "pose_edge" else with_convention(meta, convention)


@pytest.mark.parametrize("size", ["256x192", "128x96"])
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("decoder", ["numpy", "emulated_cuda"])
def test_each_convention_round_trips(convention, size, decoder, request):
    """Targets made as the convention's original trained them decode, through pose-edge's path for that convention,
    to the keypoints they were made from: within 0.01 image px, for the NumPy decoder and the CUDA kernel."""
    rng = np.random.default_rng(len(convention) + len(size))
    kps, maps = encode_as_trained(convention, INPUT_WH[size], SIGMA[size], rng)
    meta = _meta(convention, size)
    codec = codec_for(meta)
    xyxy = np.concatenate([BOXES[:, :2], BOXES[:, :2] + BOXES[:, 2:]], 1)
    _, hm_to_image, _ = crop_geometry(xyxy, codec, PADDING)
    if decoder == "numpy":
        got = decode_heatmaps(maps, hm_to_image, codec.refine, codec.dark_kernel)
    else:
        from pose_edge.kernels.stages import GpuHeatmapDecoder

        got = GpuHeatmapDecoder(codec.refine, codec.dark_kernel, device=request.getfixturevalue("emulated"))(
            maps, hm_to_image)
    err = np.abs(got[..., :2] - kps).max()
    assert err < 0.01, (convention, size, decoder, err)
    # The same targets through another convention's geometry land elsewhere: the check can tell them apart.
    for other in CONVENTIONS:
        if other != convention:
            _, wrong, _ = crop_geometry(xyxy, codec_for(_meta(other, size)), PADDING)
            assert np.abs(decode_heatmaps(maps, wrong, codec.refine, codec.dark_kernel)[..., :2] - kps).max() > 0.3


def test_crop_affines_are_the_originals():
    """crop_geometry's image -> input affine is each original's get_affine_transform; its heatmap -> image affine is
    their transform_preds (for ours, the codec's exact area mapping)."""
    xyxy = np.concatenate([BOXES[:, :2], BOXES[:, :2] + BOXES[:, 2:]], 1)
    for convention in ("simple_baselines", "darkpose"):
        for size, input_wh in INPUT_WH.items():
            to_input, hm_to_image, _ = crop_geometry(xyxy, codec_for(_meta(convention, size)), PADDING)
            hm_wh = (input_wh[0] // 4, input_wh[1] // 4)
            for p, box in enumerate(BOXES):
                np.testing.assert_allclose(to_input[p], original_transform(box, input_wh, input_wh, convention),
                                           atol=2e-3)
                np.testing.assert_allclose(hm_to_image[p], original_transform(box, input_wh, hm_wh, convention,
                                                                              inverse=True), atol=2e-3)


def test_codec_conventions_flip_and_refinement():
    """The flip handling and default refinement each original uses; DarkPose's blur kernel 11 where our rule
    gives 17 (384x288, sigma 3), 3 at 128x96."""
    ours, sb, dark = (GaussianHeatmapCodec((384, 288), 4, 3.0, c) for c in CONVENTIONS)
    assert (ours.flip_shift, sb.flip_shift, dark.flip_shift) == (False, True, False)
    assert (ours.refine, sb.refine, dark.refine) == ("dark", "quarter", "dark")
    assert (ours.dark_kernel, sb.dark_kernel, dark.dark_kernel) == (17, 17, 11)
    assert GaussianHeatmapCodec((128, 96), 4, 1.0, "darkpose").dark_kernel == 3
    assert GaussianHeatmapCodec((256, 192), 4, 2.0, "darkpose").dark_kernel == 11
    # An imported 384x288 DarkPose model records its kernel, and decoding reads it from the meta.
    meta = with_convention(model_meta(get_preset("sb-r50-384x288")), "darkpose")
    assert model_meta(get_preset("sb-r50-384x288")).extra["dark_kernel"] == 17
    assert meta.extra["dark_kernel"] == 11 and codec_for(meta).dark_kernel == 11
    with pytest.raises(DataError, match="unknown top-down convention"):
        GaussianHeatmapCodec((256, 192), 4, 2.0, "mmpose")


def test_meta_validates_and_defaults_the_convention():
    d = ModelMeta("simple_baseline", "x", InputSpec(256, 192), convention="darkpose").to_dict()
    assert ModelMeta.from_dict(d).convention == "darkpose"
    del d["convention"]  # what artefacts written before the field hold
    assert ModelMeta.from_dict(d).convention == "pose_edge"
    with pytest.raises(ArtifactError, match="unknown top-down convention"):
        ModelMeta("simple_baseline", "x", InputSpec(256, 192), convention="udp")
    with pytest.raises(ArtifactError, match="top-down heatmap models"):
        ModelMeta("kapao", "x", InputSpec(256, 320), convention="simple_baselines")


# -------------------------------------------------------------------------------------------------- blur weights


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 11, 13, 17])
def test_blur_weights_are_opencvs(kernel):
    """cv2.GaussianBlur(k, sigma 0) uses fixed tables up to 7 taps (what DarkPose's kernel 3 blurs with)."""
    np.testing.assert_allclose(dark_blur_weights(kernel), cv2.getGaussianKernel(kernel, 0).ravel(), rtol=0,
                               atol=1e-15)


def test_blur_weights_at_nine_taps_follow_the_formula():
    """OpenCV 3/4 (DarkPose's) use the formula at 9 taps; OpenCV 5 has a table there. No DarkPose config uses 9."""
    g = np.exp(-np.arange(-4, 5) ** 2 / (2 * 1.7**2))
    np.testing.assert_allclose(dark_blur_weights(9), g / g.sum(), atol=1e-15)


@pytest.mark.parametrize("decoder", ["numpy", "emulated_cuda"])
def test_dark_at_kernel_3_matches_darkposes_blur(decoder, request):
    """DarkPose at 128x96 (kernel 3, sigma 1): pose-edge's DARK gives its keypoints (the formula's weights were
    0.18 px off here)."""
    rng = np.random.default_rng(3)
    maps = np.stack([[gaussian(*rng.uniform(3, [20, 28]), 32, 24, 1.0) * rng.uniform(0.3, 1)
                      + rng.normal(0, 0.01, (32, 24)) for _ in range(NUM_KEYPOINTS)] for _ in range(4)])
    maps = maps.astype(np.float32)
    identity = np.tile(np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), (4, 1, 1))
    if decoder == "numpy":
        got = decode_heatmaps(maps, identity, "dark", 3)
    else:
        from pose_edge.kernels.stages import GpuHeatmapDecoder

        got = GpuHeatmapDecoder("dark", 3, device=request.getfixturevalue("emulated"))(maps, identity)
    np.testing.assert_allclose(got[..., :2], original_dark(maps, identity, 3), atol=1e-4)


# -------------------------------------------------------------------- import -> ONNX -> pose_edge.load -> poses


def _save_as_original(model, path):
    """Our SimpleBaseline's weights under PoseResNet's names, as the originals' train.py saves final_state."""
    renamed = {}
    for key, tensor in model.state_dict().items():
        head, _, rest = key.partition(".")
        renamed[{"backbone": rest, "deconv": f"deconv_layers.{rest}", "final": f"final_layer.{rest}"}[head]] = tensor
    torch.save(renamed, path)


@pytest.fixture(scope="module")
def imported_onnx(tmp_path_factory):
    """sb-r18-128x96 weights (random, non-trivial BN) saved the originals' way, imported with each convention and
    exported to FP32 ONNX: {convention: onnx path}."""
    from pose_edge.export.api import export_artifact

    torch.manual_seed(0)
    model = build_model(get_preset("sb-r18-128x96")).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    with torch.no_grad():  # heatmaps of a trained network's magnitude (the init's are about 1e-7)
        model.final.weight.mul_(1000.0)
    root = tmp_path_factory.mktemp("imported")
    src = root / "final_state.pth.tar"
    _save_as_original(model, src)
    out = {}
    for convention in ("simple_baselines", "darkpose"):
        run = import_checkpoint(src, "sb-r18-128x96", root / convention, convention=convention)
        out[convention] = export_artifact(run, precision="fp32", progress=False).onnx
    return out


@pytest.mark.parametrize("convention", ["simple_baselines", "darkpose"])
def test_onnx_carries_the_convention_and_the_runtime_applies_it(imported_onnx, convention):
    """pose_edge.load on the ONNX of an imported model, paper settings (flip test, the model's own refinement): the
    crops the network sees are the original's crops, and the keypoints are the original's post-processing of the
    heatmaps the network returned (its flip handling, refinement, blur kernel and transform_preds)."""
    path = imported_onnx[convention]
    info = GraphInfo.from_metadata_map({p.key: p.value for p in onnx.load(str(path)).metadata_props})
    assert info.meta.convention == convention
    est = pose_edge.load(path, device="cpu", settings="paper")
    assert est.meta.convention == convention
    seen = []
    run = est.pipeline.backend.run

    def recording(images):  # the real network runs; its inputs and outputs are kept
        outputs = run(images)
        seen.append((images.copy(), outputs[0].copy()))
        return outputs

    est.pipeline.backend.run = recording
    rng = np.random.default_rng(4)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (5, 5), 0)
    boxes = np.array([[20.5, 30.0, 110.25, 220.0], [180.0, 60.75, 300.0, 200.5]])  # xyxy, apart: no OKS-NMS merge
    poses = est(frame, boxes=boxes)
    (crops, heatmaps), = seen
    assert len(crops) == 4  # two crops and their mirror images, one batch
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    input_wh = (96, 128)
    for p, box in enumerate(xywh):
        expected = cv2.warpAffine(frame, original_transform(box, input_wh, input_wh, convention), input_wh,
                                  flags=cv2.INTER_LINEAR)
        assert np.abs(crops[p].astype(int) - expected).max() <= 1
        other = "simple_baselines" if convention == "darkpose" else "darkpose"
        elsewhere = cv2.warpAffine(frame, original_transform(box, input_wh, input_wh, other), input_wh)
        assert np.abs(elsewhere.astype(int) - expected).max() > 20  # another convention's crop visibly differs
    averaged = original_flip_average(heatmaps[:2], heatmaps[2:], shift=convention == "simple_baselines")
    back = np.stack([original_transform(b, input_wh, (24, 32), convention, inverse=True) for b in xywh])
    if convention == "simple_baselines":
        expected = original_quarter(averaged, back)
    else:
        assert est.meta.extra["dark_kernel"] == 3  # DarkPose's ResNet configs at 128x96
        expected = original_dark(averaged, back, 3)
    order = [int(np.argmin(np.abs(poses.boxes - b).sum(1))) for b in boxes.astype(np.float32)]
    got = poses.keypoints[order]
    assert np.abs(got[..., :2] - expected).max() < 0.01
    np.testing.assert_allclose(got[..., 2], averaged.max(axis=(2, 3)), rtol=1e-6)


# -------------------------------------------------------------------------------------------------- the importer


def test_the_importer_sets_the_convention(imported_onnx, tmp_path):
    """Simple Baselines files default to their convention, DarkPose's are named with --convention; both end up in the
    run's meta and import report. A KAPAO checkpoint takes no convention."""
    src = tmp_path / "final_state.pth.tar"
    _save_as_original(build_model(get_preset("sb-r18-128x96")), src)
    result = CliRunner().invoke(main, ["import", str(src), "--preset", "sb-r18-128x96", "--out", str(tmp_path / "a"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["convention"] == "simple_baselines"
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["convention"] == "simple_baselines"
    result = CliRunner().invoke(main, ["import", str(src), "--preset", "sb-r18-128x96", "--out", str(tmp_path / "b"),
                                       "--convention", "darkpose"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["convention"] == "darkpose" and meta["extra"]["dark_kernel"] == 3 and meta["input"]["color"] == "BGR"
    with pytest.raises(PoseEdgeError, match="Simple Baselines checkpoints; kapao-tiny is a kapao model"):
        import_checkpoint(src, "kapao-tiny", tmp_path / "c", convention="darkpose")
    with pytest.raises(PoseEdgeError, match="unknown convention 'udp'"):
        import_checkpoint(src, "sb-r18-128x96", tmp_path / "d", convention="udp")
