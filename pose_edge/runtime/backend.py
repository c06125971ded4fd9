"""The one method every inference backend has, and the pixel normalisation they share.

Backends (PyTorch for checkpoints, ONNX Runtime, TensorRT) all take the same input: uint8 images [N, H, W, 3] in
OpenCV's BGR order, already warped or letterboxed to the model's input size. Each backend turns them into what its
network wants (meta.input), so that pipelines and decoders never care which backend runs.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from pose_edge.runtime.meta import InputSpec, ModelMeta


class Backend(Protocol):
    meta: ModelMeta

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """images: uint8 [N, H, W, 3] BGR at meta.input size -> the network's raw outputs, batch-first."""
        ...


def normalize(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 [N, H, W, 3] BGR -> float32 [N, 3, H, W] in the network's colour order, (x - mean) / std."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    x = images[..., ::-1] if spec.color == "RGB" else images
    x = x.transpose(0, 3, 1, 2).astype(np.float32)
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std
