"""JointsMSELoss with target weights (Simple Baselines, reference §B.2).

L = (1/K) sum_k 0.5 * mean over batch and pixels of (w_nk * (P_nk - G_nk))^2, i.e. 0.5 * the mean over every element
of the weighted squared error. Keypoints with weight 0 (unlabelled, or far outside the crop) contribute nothing.
"""

from __future__ import annotations

import torch
from torch import nn


class JointsMSELoss(nn.Module):
    def __init__(self, use_target_weight: bool = True):
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(self, heatmaps: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """heatmaps, targets float [N, K, h, w]; weights float [N, K] -> scalar loss (float32)."""
        if heatmaps.shape != targets.shape:
            raise ValueError(f"heatmaps {tuple(heatmaps.shape)} and targets {tuple(targets.shape)} differ")
        diff = heatmaps.float() - targets.float()
        if self.use_target_weight:
            diff = diff * weights.float()[:, :, None, None]
        return 0.5 * diff.pow(2).mean()
