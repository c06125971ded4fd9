"""The KAPAO loss: gains, CIoU, anchor and cell matching, and that a perfect prediction costs (almost) nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from pose_edge.models import kapao
from pose_edge.train.kapao_loss import KapaoLoss, bbox_ciou, build_loss, rescaled_gains


def test_gains_rescale_to_the_reference_values():
    g = rescaled_gains({"box": 0.05, "cls": 0.3, "obj": 0.7, "kp": 0.025}, 4, 18, 1280)
    assert g == pytest.approx({"box": 0.0375, "cls": 0.050625, "obj": 2.1, "kp": 0.01875})


def test_ciou_matches_torchvision():
    rng = np.random.default_rng(0)
    a = torch.tensor(np.concatenate([rng.uniform(0, 10, (50, 2)), rng.uniform(0.5, 5, (50, 2))], 1))
    b = torch.tensor(np.concatenate([rng.uniform(0, 10, (50, 2)), rng.uniform(0.5, 5, (50, 2))], 1))
    xyxy = lambda t: torch.cat([t[:, :2] - t[:, 2:] / 2, t[:, :2] + t[:, 2:] / 2], 1)  # noqa: E731
    expected = 1 - torchvision.ops.complete_box_iou_loss(xyxy(a), xyxy(b), reduction="none")
    torch.testing.assert_close(bbox_ciou(a, b), expected, atol=1e-5, rtol=1e-5)


def make_loss(num_keypoints=17, num_classes=18, size=256):
    anchors = kapao.scaled_anchors(size)
    return KapaoLoss((8, 16, 32, 64), anchors, num_classes, num_keypoints, size,
                     {"box": 0.05, "cls": 0.3, "obj": 0.7, "kp": 0.025})


def test_matching_own_cell_and_nearer_neighbours():
    loss = make_loss()
    # a pose object at (99.0, 60.7) px with the size of P3 anchor 1 (8.8 x 8 px at 256 input)
    t = torch.zeros(1, 6 + 51)
    t[0, :6] = torch.tensor([0, 0, 99.0, 60.7, 8.8, 8.0])
    (b, a, gy, gx), matched, cell = loss.match(t, 0, (32, 32))
    # grid (12.375, 7.5875): own cell (12, 7), left neighbour (11, 7) as frac x < 0.5, lower (12, 8) as frac y > .5
    cells = {(int(x), int(y)) for x, y in zip(gx, gy)}
    assert cells == {(12, 7), (11, 7), (12, 8)}
    t[0, 2] = 100.2  # grid x 12.525: the right neighbour instead
    (_, _, gy, gx), _, _ = loss.match(t, 0, (32, 32))
    assert {(int(x), int(y)) for x, y in zip(gx, gy)} == {(12, 7), (13, 7), (12, 8)}
    # the anchors within a ratio of 4: (3.8, 5.4), (8.8, 8), (7.6, 18.8) px all match this 8.8 x 8 box
    assert sorted(set(a.tolist())) == [0, 1, 2] and len(a) == 9
    # P6 anchors (87 x 123 px ...) are more than 4x larger: no match there
    (b6, *_), _, _ = loss.match(t, 3, (4, 4))
    assert len(b6) == 0


def test_no_neighbour_across_the_border():
    loss = make_loss()
    t = torch.zeros(1, 6 + 51)
    t[0, :6] = torch.tensor([0, 0, 4.0, 4.0, 8.8, 8.0])  # grid (0.5, 0.5): neighbours would be at -1
    (_, a, gy, gx), _, _ = loss.match(t, 0, (32, 32))
    assert {(int(x), int(y)) for x, y in zip(gx, gy)} == {(0, 0)}


def perfect_raw(loss: KapaoLoss, target: torch.Tensor, size=256):
    """Raw outputs whose decoded values equal `target` (one pose object) at every matched anchor, nothing elsewhere."""
    depth = 5 + 18 + 34
    outs = [torch.full((1, 3 * depth, size // s, size // s), -12.0) for s in loss.strides]
    logit = lambda p: torch.log(p / (1 - p))  # noqa: E731
    for level, s in enumerate(loss.strides):
        (b, a, gy, gx), t, cell = loss.match(target, level, outs[level].shape[2:])
        for i in range(len(b)):
            anchor = loss.anchors[level][a[i]] / s
            raw = torch.full((depth,), -12.0)
            raw[0:2] = logit(((t[i, 2:4] - cell[i]) + 0.5) / 2)
            raw[2:4] = logit(torch.sqrt(t[i, 4:6] / anchor) / 2)
            raw[4] = 12.0
            raw[5] = 12.0
            kp = t[i, 6:].view(17, 3)[:, :2] - cell[i]
            raw[23:] = logit((kp / anchor + 2) / 4).flatten()
            outs[level][0, a[i] * depth:(a[i] + 1) * depth, gy[i], gx[i]] = raw
    return outs


def test_perfect_prediction_costs_almost_nothing_and_errors_cost_more():
    loss = make_loss()
    target = torch.zeros(1, 6 + 51)
    target[0, :6] = torch.tensor([0, 0, 100.2, 60.7, 30.0, 60.0])
    kps = torch.stack([torch.linspace(90, 110, 17), torch.linspace(35, 88, 17), torch.full((17,), 2.0)], 1)
    target[0, 6:] = kps.flatten()
    outs = perfect_raw(loss, target)
    total, parts = loss(outs, target)
    assert parts[0] < 1e-4 and parts[3] < 1e-4  # box and keypoints exact
    assert parts[2] < 1e-3  # class right
    # objectness: targets are IoU 1 at matches, 0 elsewhere, logits +-12: tiny
    assert parts[1] < 1e-3
    # shift every keypoint by one pixel: the keypoint loss (L2 in grid units, averaged) grows to about 1 px / stride
    moved = target.clone()
    moved[0, 6::3] += 1.0
    _, parts_moved = loss(outs, moved)
    unscaled = parts_moved[3] / loss.gains["kp"]
    assert 0.05 < unscaled < 0.25  # levels with stride 8 and 16 matched: 1/8 + 1/16 = 0.19
    # invisible keypoints do not count
    hidden = moved.clone()
    hidden[0, 8::3] = 0
    _, parts_hidden = loss(outs, hidden)
    assert parts_hidden[3] == 0


def test_loss_gradients_flow_and_detector_has_no_class_or_keypoint_loss():
    preset = kapao.PRESETS["det-tiny"]
    model = kapao.build_model(preset)
    loss = build_loss(kapao.model_meta(preset), preset.train_args)
    targets = torch.tensor([[0, 0, 100.0, 100.0, 40.0, 90.0], [1, 0, 50.0, 60.0, 20.0, 30.0]])
    total, parts = loss(model(torch.rand(2, 3, 256, 256)), targets)
    assert math.isfinite(total.item()) and parts[2] == 0 and parts[3] == 0 and parts[0] > 0
    total.backward()
    assert all(p.grad is not None for p in model.head.parameters())
    # no targets at all: objectness only
    total, parts = loss(model(torch.rand(1, 3, 256, 256)), torch.zeros(0, 6))
    assert parts[0] == 0 and parts[1] > 0
