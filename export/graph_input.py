"""The exported graph's front: uint8 BGR images in, the network's raw outputs out.

The runtime hands every backend uint8 [N, H, W, 3] BGR images (OpenCV's order) already warped or letterboxed to the
input size. Doing the cast, the channel flip, the transpose and (x - mean) / std inside the graph means the host only
copies bytes (a quarter of the float32 traffic to the GPU) and every backend prepares pixels identically.
"""

from __future__ import annotations

import torch
from torch import nn

from pose_edge.model_meta import InputSpec


class InGraphPreprocess(nn.Module):
    """uint8 [N, H, W, 3] BGR -> model((x - mean) / std as float32 [N, 3, H, W] in spec.color order) -> tuple.

    With input_format "float32_nchw" the images are expected already normalised (host-side preprocessing).
    """

    def __init__(self, model: nn.Module, spec: InputSpec, input_format: str = "uint8_nhwc_bgr"):
        super().__init__()
        self.model = model
        self.input_format = input_format
        self.to_rgb = spec.color == "RGB"
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", (1.0 / torch.tensor(spec.std, dtype=torch.float32)).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.input_format == "uint8_nhwc_bgr":
            # Cast first: TensorRT accepts a uint8 tensor only as the input of a Cast
            x = images.to(torch.float32).permute(0, 3, 1, 2)
            if self.to_rgb:
                x = x.flip(1)
            x = (x - self.mean) * self.inv_std
        else:
            x = images
        out = self.model(x)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)
