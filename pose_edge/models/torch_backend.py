"""A PyTorch model or checkpoint as a runtime Backend, so checkpoints go through the same pipelines as ONNX models
and engines (pose_edge.runtime.backend: uint8 [N, H, W, 3] BGR in, raw outputs as numpy arrays out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pose_edge.errors import PoseEdgeError
from pose_edge.model_meta import InputSpec, ModelMeta


def prepare_images(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 [N, H, W, 3] BGR (any device) -> float32 [N, 3, H, W] in spec.color order, (x - mean) / std.

    The torch twin of pose_edge.runtime.backend.normalize, for training batches already on the device.
    """
    x = images.flip(-1) if spec.color == "RGB" else images
    x = x.permute(0, 3, 1, 2).float()
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class TorchBackend:
    """run(uint8 [N, H, W, 3] BGR) -> list of float32 numpy outputs, batch-first, in forward's order."""

    def __init__(self, model: nn.Module, meta: ModelMeta, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta

    @classmethod
    def from_checkpoint(cls, artifact: str | Path, device: str | torch.device = "cpu") -> "TorchBackend":
        """From a checkpoint file or a RUN folder (its best.pt, else last.pt)."""
        from pose_edge.models.checkpoint import load_model

        model, meta, path = load_model(artifact)
        backend = cls(model, meta, device)
        backend.path = path
        return backend

    @torch.no_grad()
    def run(self, images: np.ndarray) -> list[np.ndarray]:
        spec = self.meta.input
        if (not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4
                or images.shape[1:] != (spec.height, spec.width, 3)):
            raise PoseEdgeError(f"{self.meta.preset} expects uint8 images [N, {spec.height}, {spec.width}, 3], got "
                                f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
        x = prepare_images(torch.from_numpy(np.ascontiguousarray(images)).to(self.device), spec)
        out = self.model(x)
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        return [o.float().cpu().numpy() for o in outs]
