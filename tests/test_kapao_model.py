"""The KAPAO / person-detector network: sizes as the reference gives them, output layout, metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose_edge.model_meta import ModelMeta
from pose_edge.models import kapao


@pytest.mark.parametrize("name, millions", [("kapao-s", 12.56), ("kapao-m", 35.76), ("kapao-l", 77.05)])
def test_parameter_counts_match_the_reference(name, millions):
    model = kapao.build_model(kapao.PRESETS[name])
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions
    # Detect input channels as the reference lists them
    width = {"kapao-s": 0.5, "kapao-m": 0.75, "kapao-l": 1.0}[name]
    assert [h.in_channels for h in model.head] == [int(c * width) for c in (256, 512, 768, 1024)]
    assert all(h.out_channels == 3 * 57 for h in model.head)


@pytest.mark.parametrize("name", ["kapao-tiny", "det-tiny"])
def test_forward_returns_one_raw_grid_per_stride(name):
    preset = kapao.PRESETS[name]
    model = kapao.build_model(preset).eval()
    h, w = 128, 192  # any multiple of 64
    with torch.no_grad():
        out = model(torch.rand(2, 3, h, w))
    meta = kapao.model_meta(preset)
    depth = 5 + meta.num_classes + 2 * meta.num_keypoints
    assert [tuple(o.shape) for o in out] == [(2, 3 * depth, h // s, w // s) for s in meta.strides]
    # raw logits (not sigmoids): the objectness prior bias puts them well below 0
    obj = out[0].view(2, 3, depth, h // 8, w // 8)[:, :, 4]
    assert obj.mean() < -3


def test_meta_describes_the_head_and_round_trips():
    for name, preset in kapao.PRESETS.items():
        meta = kapao.model_meta(preset)
        assert meta.strides == (8, 16, 32, 64) and len(meta.anchors) == 4 and len(meta.anchors[0]) == 3
        assert ModelMeta.from_json(meta.to_json()) == meta
        if preset.family == "kapao":
            assert meta.num_classes == 18 and meta.num_keypoints == 17
        else:
            assert meta.family == "person_detector" and meta.num_classes == 1 and meta.num_keypoints == 0
    assert kapao.model_meta(kapao.PRESETS["kapao-s"]).anchors == tuple(
        tuple(tuple(float(v) for v in a) for a in level) for level in kapao.ANCHORS_1280)
    # the anchors scale with the input's longest side so they keep their size relative to the image
    tiny = kapao.PRESETS["kapao-tiny"]
    np.testing.assert_allclose(np.array(kapao.model_meta(tiny).anchors),
                               np.array(kapao.ANCHORS_1280) * max(tiny.input_size) / 1280, atol=0.01)


def test_founding_study_presets():
    p512, p1280 = kapao.PRESETS["kapao-seed-512"], kapao.PRESETS["kapao-seed-1280"]
    assert p512.input_size == (512, 512) and p512.train_args["batch"] == 32
    assert p1280.input_size == (1280, 1280) and p1280.train_args["batch"] == 16
    for p in (p512, p1280, kapao.PRESETS["kapao-s"]):
        assert p.train_args["optimizer"] == "sgd" and p.train_args["nesterov"] and p.train_args["lr"] == 0.01
