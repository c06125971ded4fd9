"""Multiply-accumulate counts of a model's forward pass, reported as "GFLOPs" the way model tables do.

count_gflops counts, per call of each module during one forward pass at `input_shape` (batch included):
    Conv2d           N * C_out * (C_in / groups) * k_h * k_w * H_out * W_out
    ConvTranspose2d  N * C_in * (C_out / groups) * k_h * k_w * H_in * W_in   (by INPUT pixels)
    Linear           N * in_features * out_features  (times any extra leading dimensions)
and nothing else (BatchNorm, activations, pooling, additions and resampling are left out, as fvcore and thop leave
them out of the convolution counts that papers quote). One multiply-accumulate counts as one "FLOP", the convention
of the Simple Baselines/HRNet and timm tables. (YOLOv5 prints 2 x MACs; halve its numbers to compare.)

Transposed convolutions: each input pixel multiplies the whole C_in x C_out x k x k kernel once, so counting by input
pixels is the number of multiply-adds actually done; this is fvcore's convention. Counting by output pixels (what
HRNet's get_model_summary hook does, weight size x output size) is 4x larger for a 4x4 stride-2 layer. For
sb-r50-256x192 the two give 5.4 and 9.7 G; the 8.9 G quoted in the HRNet table matches neither.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def _conv_macs(module: nn.Conv2d, inputs, output) -> int:
    w = module.weight  # [C_out, C_in / groups, kh, kw]
    return output.shape[0] * w.numel() * math.prod(output.shape[2:])


def _deconv_macs(module: nn.ConvTranspose2d, inputs, output) -> int:
    x = inputs[0]
    w = module.weight  # [C_in, C_out / groups, kh, kw]
    return x.shape[0] * w.numel() * math.prod(x.shape[2:])


def _linear_macs(module: nn.Linear, inputs, output) -> int:
    return math.prod(output.shape[:-1]) * module.in_features * module.out_features


_COUNTERS = ((nn.ConvTranspose2d, _deconv_macs), (nn.Conv2d, _conv_macs), (nn.Linear, _linear_macs))


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of `model` on an input of `input_shape` (float32 [N, C, H, W]).

    The pass runs on a copy of the model on torch's "meta" device, which propagates shapes without computing (a
    1280 x 1280 KAPAO-L costs nothing); a model with an operation the meta device lacks runs for real instead.
    """
    try:
        return _count(copy.deepcopy(model).to("meta"), torch.zeros(input_shape, device="meta"))
    except (NotImplementedError, RuntimeError):
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        return _count(model, torch.zeros(input_shape, device=device))


def _count(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(counter):
        def run(module, inputs, output):
            nonlocal total
            total += int(counter(module, inputs, output))
        return run

    handles = []
    for module in model.modules():
        for cls, counter in _COUNTERS:
            if isinstance(module, cls):
                handles.append(module.register_forward_hook(hook(counter)))
                break
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def count_gflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """count_macs / 1e9: the "GFLOPs" column of `pose-edge models` (see the module docstring)."""
    return count_macs(model, input_shape) / 1e9
