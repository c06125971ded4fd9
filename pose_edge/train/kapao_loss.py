"""The KAPAO training loss (reference §A.7), also used for the person detector (keypoint gain 0, one class).

Targets: float32 [T, 6 + 3K] for the whole batch, in input pixels: (image index in the batch, class, cx, cy, w, h,
then K x (x, y, v)), i.e. pose_edge.data.kapao_labels rows with the image index in front.

Per level, every target is matched to each anchor whose width and height ratios (both ways) stay below anchor_t, in
its own grid cell and the nearer horizontal and vertical neighbour cells (offset 0.5, never across the border).
For each matched (image, anchor, cell):
    box   1 - CIoU of (2*sigmoid - 0.5, (2*sigmoid)^2 * anchor) against (target centre - cell, target size), grid units
    obj   BCE-with-logits over every anchor and cell, target = clamp(CIoU, 0) at matches and 0 elsewhere, weighted per
          level by `balance` (4.0, 1.0, 0.25, 0.06)
    cls   BCE-with-logits against the one-hot class (only with more than one class, as the reference)
    kp    mean over visible keypoints (v > 0) of the L2 distance between (4*sigmoid - 2) * anchor and the keypoint
          measured from the cell's integer corner, grid units (not squared); keypoint objects have v = 0 everywhere
Total = batch size * (box_gain * box + obj_gain * obj + cls_gain * cls + kp_gain * kp), with the reference gains
rescaled to the number of levels, classes and the input size (`rescaled_gains`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

BALANCE = (4.0, 1.0, 0.25, 0.06)  # objectness weight per level P3..P6
NEIGHBOUR_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))  # own, left, up, right, down


def rescaled_gains(gains: dict, num_levels: int, num_classes: int, input_size: int) -> dict:
    """The reference's train.py scaling: box, kp x 3/nl; cls x nc/80 x 3/nl; obj x (size/640)^2 x 3/nl."""
    f = 3.0 / num_levels
    return {
        "box": gains["box"] * f,
        "cls": gains["cls"] * num_classes / 80.0 * f,
        "obj": gains["obj"] * (input_size / 640.0) ** 2 * f,
        "kp": gains.get("kp", 0.0) * f,
    }


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching rows of box1 and box2 [n, 4] (cx, cy, w, h) -> [n]."""
    b1_lo, b1_hi = box1[:, :2] - box1[:, 2:] / 2, box1[:, :2] + box1[:, 2:] / 2
    b2_lo, b2_hi = box2[:, :2] - box2[:, 2:] / 2, box2[:, :2] + box2[:, 2:] / 2
    wh_inter = (torch.min(b1_hi, b2_hi) - torch.max(b1_lo, b2_lo)).clamp(min=0)
    inter = wh_inter[:, 0] * wh_inter[:, 1]
    w1, h1 = box1[:, 2], box1[:, 3] + eps
    w2, h2 = box2[:, 2], box2[:, 3] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclosing = torch.max(b1_hi, b2_hi) - torch.min(b1_lo, b2_lo)
    diagonal2 = (enclosing ** 2).sum(1) + eps
    centre2 = ((box2[:, :2] - box1[:, :2]) ** 2).sum(1)
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre2 / diagonal2 + v * alpha)


class KapaoLoss(nn.Module):
    """loss(outputs, targets) -> (total scalar, detached [box, obj, cls, kp] parts)."""

    def __init__(self, strides, anchors, num_classes: int, num_keypoints: int, input_size: int, gains: dict,
                 anchor_t: float = 4.0, balance=BALANCE):
        super().__init__()
        self.strides = tuple(strides)
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32), persistent=False)  # [L, A, 2]
        self.num_classes, self.num_keypoints = num_classes, num_keypoints
        self.gains = rescaled_gains(gains, len(self.strides), num_classes, input_size)
        self.anchor_t = anchor_t
        self.balance = tuple(balance)
        self.bce = nn.BCEWithLogitsLoss()

    def match(self, targets: torch.Tensor, level: int, grid_hw: tuple[int, int]):
        """Targets -> matches at one level: (image, anchor, gy, gx) index tensors [M] and the matched targets in grid
        units with the cell corner (gx, gy) as float [M, 2]."""
        height, width = grid_hw
        stride = self.strides[level]
        anchors = self.anchors[level] / stride  # grid units [A, 2]
        num_anchors, device = anchors.shape[0], targets.device
        t = targets.clone()
        t[:, 2:6] /= stride
        if self.num_keypoints:
            kp = t[:, 6:].view(-1, self.num_keypoints, 3)
            kp[..., :2] /= stride
        # every (anchor, target) pair whose size ratios stay within anchor_t
        ratio = t[None, :, 4:6] / anchors[:, None]  # [A, T, 2]
        ok = torch.max(ratio, 1 / ratio).amax(2) < self.anchor_t
        anchor_index = torch.arange(num_anchors, device=device)[:, None].expand_as(ok)[ok]
        t = t[None].expand(num_anchors, -1, -1)[ok]
        # own cell plus the nearer horizontal and vertical neighbour, unless that crosses the border
        xy = t[:, 2:4]
        xy_inv = torch.tensor([width, height], device=device, dtype=xy.dtype) - xy
        near_low = (xy % 1 < 0.5) & (xy > 1)
        near_high = (xy_inv % 1 < 0.5) & (xy_inv > 1)
        use = torch.stack([torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1], near_high[:, 0],
                           near_high[:, 1]])  # [5, M]
        offsets = torch.tensor(NEIGHBOUR_OFFSETS, device=device, dtype=xy.dtype) * 0.5
        t_all = t[None].expand(5, -1, -1)[use]
        anchor_index = anchor_index[None].expand(5, -1)[use]
        cell = (t_all[:, 2:4] - offsets[:, None].expand(-1, len(t), -1)[use]).long()
        gx, gy = cell[:, 0].clamp(0, width - 1), cell[:, 1].clamp(0, height - 1)
        return (t_all[:, 0].long(), anchor_index, gy, gx), t_all, cell.to(t_all.dtype)

    def forward(self, outputs: list[torch.Tensor], targets: torch.Tensor):
        device = outputs[0].device
        parts = torch.zeros(4, device=device)  # box, obj, cls, kp
        depth = 5 + self.num_classes + 2 * self.num_keypoints
        batch = outputs[0].shape[0]
        targets = targets.to(device=device, dtype=torch.float32)
        for level, raw in enumerate(outputs):
            n, _, height, width = raw.shape
            pred = raw.view(n, -1, depth, height, width).permute(0, 1, 3, 4, 2).float()  # [N, A, H, W, D]
            tobj = torch.zeros(pred.shape[:4], device=device)
            (b, a, gy, gx), t, cell = self.match(targets, level, (height, width))
            if len(b):
                ps = pred[b, a, gy, gx]
                anchors = self.anchors[level][a] / self.strides[level]
                pxy = ps[:, 0:2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors
                ciou = bbox_ciou(torch.cat([pxy, pwh], 1), torch.cat([t[:, 2:4] - cell, t[:, 4:6]], 1))
                parts[0] += (1.0 - ciou).mean()
                # where several targets share an (image, anchor, cell), the best IoU is the objectness target
                flat = ((b * tobj.shape[1] + a) * height + gy) * width + gx
                tobj.view(-1).scatter_reduce_(0, flat, ciou.detach().clamp(0), reduce="amax", include_self=True)
                if self.num_classes > 1:
                    onehot = torch.zeros_like(ps[:, 5:5 + self.num_classes])
                    onehot[torch.arange(len(b), device=device), t[:, 1].long()] = 1.0
                    parts[2] += self.bce(ps[:, 5:5 + self.num_classes], onehot)
                if self.num_keypoints:
                    tkp = t[:, 6:].view(-1, self.num_keypoints, 3)
                    visible = tkp[..., 2] > 0
                    if visible.any():
                        pkp = ps[:, 5 + self.num_classes:].view(-1, self.num_keypoints, 2)
                        pkp = (pkp.sigmoid() * 4 - 2) * anchors[:, None, :]
                        target_kp = tkp[..., :2] - cell[:, None, :]
                        parts[3] += torch.linalg.norm(pkp[visible] - target_kp[visible], dim=-1).mean()
            parts[1] += self.bce(pred[..., 4], tobj) * self.balance[level]
        g = self.gains
        weighted = parts * torch.tensor([g["box"], g["obj"], g["cls"], g["kp"]], device=device)
        return weighted.sum() * batch, weighted.detach()


def build_loss(meta, train_args: dict) -> KapaoLoss:
    """The loss for a model described by `meta` (ModelMeta) and a preset's train_args."""
    return KapaoLoss(meta.strides, meta.anchors, meta.num_classes, meta.num_keypoints,
                     max(meta.input.height, meta.input.width), train_args["loss_gains"],
                     train_args.get("anchor_t", 4.0))
