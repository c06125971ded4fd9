"""Simple Baseline: presets, sizes, MAC counts, initialisation, backbone weights, training crops, loss, TorchBackend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.keypoints import FLIP_PERM, NUM_KEYPOINTS
from pose_edge.models import build_model, get_preset, model_meta
from pose_edge.models.flops import count_macs
from pose_edge.models.simple_baseline import PRESETS, load_backbone_weights
from pose_edge.models.torch_backend import TorchBackend, prepare_images
from pose_edge.runtime.backend import normalize
from pose_edge.train.sb_loss import JointsMSELoss


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_outputs_stride_4_heatmaps(name):
    preset = PRESETS[name]
    model = build_model(preset).eval()
    meta = model_meta(preset)
    assert meta.family == "simple_baseline" and meta.heatmap_stride == 4
    assert meta.extra["heatmap_size"] == [preset.input_size[0] // 4, preset.input_size[1] // 4]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 32))  # any multiple of 32 works; a small one keeps the test quick
    assert out.shape == (1, NUM_KEYPOINTS, 16, 8)
    assert {"epochs", "batch", "lr", "sigma", "augment"} <= preset.train_args.keys()


def test_paper_sizes():
    params = sum(p.numel() for p in build_model("sb-r50-256x192").parameters())
    assert round(params / 1e6, 1) == 34.0  # the paper's 34.0M
    assert get_preset("sb-r50-256x192").train_args["sigma"] == 2.0
    assert get_preset("sb-r50-384x288").train_args["sigma"] == 3.0
    seed = get_preset("sb-r50-seed")
    assert seed.input_size == (256, 192) and seed.train_args["batch"] == 96 and seed.train_args["epochs"] == 70


def hand_count_resnet18_sb(h: int, w: int, filters: int = 256) -> int:
    """Multiply-accumulates of ResNet-18 + 3 deconvs + 1x1 at input h x w, written out layer by layer."""
    def conv(c_in, c_out, k, hw):
        return c_in * c_out * k * k * hw[0] * hw[1]

    s2, s4, s8, s16, s32 = [(h // f, w // f) for f in (2, 4, 8, 16, 32)]
    total = conv(3, 64, 7, s2)  # stem; the 3x3 max-pool takes it to s4
    total += 4 * conv(64, 64, 3, s4)  # layer1: two basic blocks
    for c_in, c, hw in ((64, 128, s8), (128, 256, s16), (256, 512, s32)):  # layer2..4
        total += conv(c_in, c, 3, hw) + conv(c, c, 3, hw) + conv(c_in, c, 1, hw)  # first block + downsample
        total += 2 * conv(c, c, 3, hw)  # second block
    # Transposed 4x4 stride-2 convolutions, counted by input pixels.
    total += 512 * filters * 16 * s32[0] * s32[1] + filters * filters * 16 * (s16[0] * s16[1] + s8[0] * s8[1])
    total += filters * NUM_KEYPOINTS * s4[0] * s4[1]  # final 1x1 conv
    return total


def test_mac_counter_against_a_hand_count():
    preset = get_preset("sb-r18-128x96")
    counted = count_macs(build_model(preset), (1, 3, *preset.input_size))
    assert counted == hand_count_resnet18_sb(*preset.input_size, preset.model_args["deconv_filters"][0])
    assert counted == pytest.approx(0.724e9, rel=1e-3)
    # The convention for transposed convolutions: by input pixels (output pixels would be 4x).
    deconv = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False)
    assert count_macs(deconv, (2, 8, 5, 3)) == 2 * 8 * 4 * 16 * 5 * 3


def test_head_is_initialised_as_the_reference():
    model = build_model("sb-r50-256x192")
    deconv_weights = torch.cat([m.weight.flatten() for m in model.deconv if isinstance(m, nn.ConvTranspose2d)])
    assert deconv_weights.std().item() == pytest.approx(0.001, rel=0.02)
    assert model.final.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert torch.count_nonzero(model.final.bias) == 0
    for m in model.deconv:
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert all(m.bias is None for m in model.deconv if isinstance(m, nn.ConvTranspose2d))


def test_backbone_weights_from_a_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)  # with the classifier's fc.* entries, as torchvision ships it
    model = build_model("sb-r18-128x96")
    assert not torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    load_backbone_weights(model, path)
    for name, value in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[name], value), name

    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ArtifactError, match="not ResNet-18"):
        load_backbone_weights(model, wrong)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="cut.pth"):
        load_backbone_weights(model, truncated)
    with pytest.raises(ArtifactError, match="no such"):
        load_backbone_weights(model, tmp_path / "missing.pth")


def test_joints_mse_loss_matches_the_reference_formula():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 17, 8, 6), torch.rand(2, 17, 8, 6)
    weights = (torch.rand(2, 17) > 0.3).float()
    expected = sum(0.5 * ((pred[:, k] * weights[:, k, None, None] - target[:, k] * weights[:, k, None, None]) ** 2)
                   .mean() for k in range(17)) / 17
    torch.testing.assert_close(JointsMSELoss()(pred, target, weights), expected)
    # An unweighted keypoint contributes nothing, whatever the prediction.
    pred2 = pred.clone()
    pred2[weights == 0] += 5
    torch.testing.assert_close(JointsMSELoss()(pred2, target, weights), expected)


def test_torch_preprocessing_equals_the_runtime_normalisation():
    meta = model_meta("sb-r18-128x96")
    images = np.random.default_rng(0).integers(0, 256, (2, 128, 96, 3), dtype=np.uint8)
    np.testing.assert_allclose(prepare_images(torch.from_numpy(images), meta.input).numpy(),
                               normalize(images, meta.input), rtol=1e-6, atol=1e-6)


def test_torch_backend_runs_checkpoints(tmp_path):
    from pose_edge.models.checkpoint import save_checkpoint

    preset = get_preset("sb-r18-128x96")
    torch.manual_seed(1)
    model = build_model(preset).eval()
    meta = model_meta(preset)
    save_checkpoint(tmp_path / "best.pt", {"kind": "weights", "preset": dataclasses.asdict(preset),
                                           "meta": meta.to_json(), "model": model.state_dict()})
    backend = TorchBackend.from_checkpoint(tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (3, 128, 96, 3), dtype=np.uint8)
    (out,) = backend.run(images)
    with torch.no_grad():
        expected = model(torch.from_numpy(normalize(images, meta.input))).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    assert backend.meta == meta
    with pytest.raises(PoseEdgeError, match="uint8"):
        backend.run(images[:, :64])


# ---------------------------------------------------------------------------------------------------------------
# Training crops


@pytest.fixture(scope="module")
def train_split(synth_data):
    from pose_edge.data.coco import CocoKeypoints

    return CocoKeypoints(synth_data, "train")


def test_training_crops_are_deterministic_per_seed_epoch_and_index(train_split):
    from pose_edge.data.topdown_samples import TopDownDataset

    ds = TopDownDataset(train_split, (128, 96), 1.0, "sb", seed=0)
    assert len(ds) > 0
    a, b = ds[3], ds[3]
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["heatmaps"], b["heatmaps"])
    ds.set_epoch(1)
    c = ds[3]
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].shape == (128, 96, 3) and a["heatmaps"].shape == (NUM_KEYPOINTS, 32, 24)
    assert a["weights"].shape == (NUM_KEYPOINTS,) and set(np.unique(a["weights"])) <= {0.0, 1.0}
    with pytest.raises(PoseEdgeError, match="augmentation policy"):
        TopDownDataset(train_split, (128, 96), 1.0, "heavy")


def test_training_flip_mirrors_the_crop_and_swaps_left_and_right(train_split):
    from pose_edge.data.topdown_samples import TopDownAugment, TopDownDataset

    plain = TopDownDataset(train_split, (128, 96), 1.0, "none")
    flipped = TopDownDataset(train_split, (128, 96), 1.0, "none")
    flipped.policy = TopDownAugment(flip=1.0)
    for i in range(3):
        p, f = plain[i], flipped[i]
        assert np.abs(f["image"].astype(int) - p["image"][:, ::-1].astype(int)).max() <= 1
        np.testing.assert_allclose(f["heatmaps"], p["heatmaps"][list(FLIP_PERM), :, ::-1], atol=1e-6)
        np.testing.assert_array_equal(f["weights"], p["weights"][list(FLIP_PERM)])
