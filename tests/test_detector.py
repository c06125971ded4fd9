"""The person detector: a box source for the top-down pipeline, trained by the same engine, loss and decoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pose_edge.errors import PoseEdgeError
from pose_edge.models import kapao
from pose_edge.runtime.detector import PersonDetector
from pose_edge.train.torch_backend import TorchBackend


def backend(name: str, seed: int = 0) -> TorchBackend:
    torch.manual_seed(seed)
    preset = kapao.PRESETS[name]
    return TorchBackend(kapao.build_model(preset), kapao.model_meta(preset))


def test_detector_returns_boxes_inside_the_image_sorted_by_score():
    detector = PersonDetector(backend("det-tiny"), conf_thres=0.0, max_det=50)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    boxes, scores = detector(image)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.shape == (len(scores), 4) and 0 < len(scores) <= 50
    assert (np.diff(scores) <= 0).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= 320 + 1e-3).all() and (boxes[:, 1] + boxes[:, 3] <= 240 + 1e-3).all()
    batch = detector.detect([image, image[:100]])
    np.testing.assert_allclose(batch[0][0], boxes, atol=1e-4)
    assert (batch[1][0][:, 1] + batch[1][0][:, 3] <= 100 + 1e-3).all()


def test_detector_refuses_a_pose_model():
    with pytest.raises(PoseEdgeError, match="not a person detector"):
        PersonDetector(backend("kapao-tiny"))
