"""KAPAO (keypoints and poses as objects) and the person detector: one YOLOv5-P6 style network, two heads.

The network follows the reference's yolov5{s,m,l}6 configuration (reference §A.1): a Focus stem, Conv (Conv2d without
bias + BN + SiLU) downsampling with C3 blocks to P6/64, SPP (3, 5, 7) and C3, then a PAN that goes up to P3 and back
down to P6, and a 1x1 Conv2d (with bias) per level. Depth and width multiples scale it exactly as the reference's
parse_model does (repeats max(round(n * depth), 1), channels rounded up to a multiple of 8).

forward(x: float32 [N, 3, H, W], RGB / 255) returns a list of four raw grids, one per stride S in (8, 16, 32, 64):
[N, A*D, H/S, W/S] with A = 3 anchors and D = 5 + num_classes + 2*num_keypoints, channel a*D + c. No sigmoid and no
permute: pose_edge.runtime.kapao_decode reads this layout (and documents the channel meanings).

Families:
    kapao            num_classes 18 (person pose object + 17 keypoint objects), num_keypoints 17: D = 57
    person_detector  num_classes 1 (person), num_keypoints 0: D = 6. Same backbone and neck; the boxes feed the
                     top-down Simple Baseline at run time (pose_edge.runtime.detector).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pose_edge.keypoints import NAMES, NUM_KEYPOINTS
from pose_edge.model_meta import InputSpec, ModelMeta
from pose_edge.models.preset import Preset

STRIDES = (8, 16, 32, 64)
# (w, h) in input pixels at 1280 input, per level P3..P6 (models/yolov5*6.yaml).
ANCHORS_1280 = (
    ((19, 27), (44, 40), (38, 94)),
    ((96, 68), (86, 152), (180, 137)),
    ((140, 301), (303, 264), (238, 542)),
    ((436, 615), (739, 380), (925, 792)),
)
KP_BBOX = 0.05  # keypoint-object box side as a fraction of the longest input side (reference §A.3)


def scaled_anchors(input_size: int) -> tuple:
    """The reference anchors scaled to another input size (its longest side), so that they keep the same size
    relative to the image."""
    f = input_size / 1280
    return tuple(tuple((round(w * f, 2), round(h * f, 2)) for w, h in level) for level in ANCHORS_1280)


# ---------------------------------------------------------------------------------------------------- building blocks


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding) + BatchNorm + SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)  # the reference's BN settings
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """Space-to-depth (each 2x2 pixel block becomes 4 channels), then a Conv: [N, C, H, W] -> [N, c_out, H/2, W/2]."""

    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__()
        self.conv = Conv(4 * c_in, c_out, k)

    def forward(self, x):
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1 = Conv(c, c, 1)
        self.cv2 = Conv(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C3(nn.Module):
    """CSP block: half the channels go through n bottlenecks, half bypass them, a 1x1 conv merges both."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        c = c_out // 2
        self.cv1 = Conv(c_in, c, 1)
        self.cv2 = Conv(c_in, c, 1)
        self.cv3 = Conv(2 * c, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(c, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPP(nn.Module):
    """Spatial pyramid pooling: max pools of several sizes (stride 1) concatenated with their input."""

    def __init__(self, c_in: int, c_out: int, kernels=(3, 5, 7)):
        super().__init__()
        c = c_in // 2
        self.cv1 = Conv(c_in, c, 1)
        self.cv2 = Conv(c * (len(kernels) + 1), c_out, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(pool(x) for pool in self.pools)], 1))


# ---------------------------------------------------------------------------------------------------- the network


class YoloP6(nn.Module):
    """The P6 network with a detection head of D = 5 + num_classes + 2*num_keypoints channels per anchor."""

    def __init__(self, depth: float, width: float, num_classes: int, num_keypoints: int, anchors=ANCHORS_1280,
                 strides=STRIDES):
        super().__init__()

        def ch(c: int) -> int:  # channels, rounded up to a multiple of 8 as parse_model does
            return math.ceil(c * width / 8) * 8

        def n(repeats: int) -> int:
            return max(round(repeats * depth), 1)

        self.num_classes, self.num_keypoints = num_classes, num_keypoints
        self.strides = tuple(strides)
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32), persistent=False)  # [L, A, 2]
        c64, c128, c256, c512, c768, c1024 = (ch(c) for c in (64, 128, 256, 512, 768, 1024))

        # backbone: P1/2 .. P6/64
        self.stem = Focus(3, c64, 3)
        self.p2 = nn.Sequential(Conv(c64, c128, 3, 2), C3(c128, c128, n(3)))
        self.p3 = nn.Sequential(Conv(c128, c256, 3, 2), C3(c256, c256, n(9)))
        self.p4 = nn.Sequential(Conv(c256, c512, 3, 2), C3(c512, c512, n(9)))
        self.p5 = nn.Sequential(Conv(c512, c768, 3, 2), C3(c768, c768, n(3)))
        self.p6 = nn.Sequential(Conv(c768, c1024, 3, 2), SPP(c1024, c1024, (3, 5, 7)), C3(c1024, c1024, n(3), False))

        # top-down path (FPN)
        self.lat6 = Conv(c1024, c768, 1)
        self.td5 = C3(2 * c768, c768, n(3), False)
        self.lat5 = Conv(c768, c512, 1)
        self.td4 = C3(2 * c512, c512, n(3), False)
        self.lat4 = Conv(c512, c256, 1)
        self.out3 = C3(2 * c256, c256, n(3), False)
        # bottom-up path (PAN)
        self.down3 = Conv(c256, c256, 3, 2)
        self.out4 = C3(2 * c256, c512, n(3), False)
        self.down4 = Conv(c512, c512, 3, 2)
        self.out5 = C3(2 * c512, c768, n(3), False)
        self.down5 = Conv(c768, c768, 3, 2)
        self.out6 = C3(2 * c768, c1024, n(3), False)

        self.depth_per_anchor = 5 + num_classes + 2 * num_keypoints
        num_anchors = self.anchors.shape[1]
        self.head = nn.ModuleList(nn.Conv2d(c, num_anchors * self.depth_per_anchor, 1)
                                  for c in (c256, c512, c768, c1024))
        self._initialize_biases()

    def _initialize_biases(self) -> None:
        """Objectness prior of ~8 objects per 640x640 image, class prior 0.6 / (classes - 0.99) (reference §A.1)."""
        num_anchors = self.anchors.shape[1]
        with torch.no_grad():
            for conv, s in zip(self.head, self.strides):
                b = conv.bias.view(num_anchors, self.depth_per_anchor)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:5 + self.num_classes] += math.log(0.6 / (self.num_classes - 0.99))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        up = nn.functional.interpolate
        p3 = self.p3(self.p2(self.stem(x)))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        p6 = self.p6(p5)

        l6 = self.lat6(p6)
        t5 = self.td5(torch.cat([up(l6, scale_factor=2.0, mode="nearest"), p5], 1))
        l5 = self.lat5(t5)
        t4 = self.td4(torch.cat([up(l5, scale_factor=2.0, mode="nearest"), p4], 1))
        l4 = self.lat4(t4)
        o3 = self.out3(torch.cat([up(l4, scale_factor=2.0, mode="nearest"), p3], 1))
        o4 = self.out4(torch.cat([self.down3(o3), l4], 1))
        o5 = self.out5(torch.cat([self.down4(o4), l5], 1))
        o6 = self.out6(torch.cat([self.down5(o5), l6], 1))
        return [head(f) for head, f in zip(self.head, (o3, o4, o5, o6))]


# ---------------------------------------------------------------------------------------------------- presets

# The reference recipe (reference §A.8, hyp.kp-p6.yaml): SGD Nesterov, one-cycle cosine, warm-up, EMA, AMP.
REFERENCE_RECIPE = {
    "optimizer": "sgd", "lr": 0.01, "momentum": 0.937, "nesterov": True, "weight_decay": 5e-4, "nominal_batch": 64,
    "schedule": "one_cycle", "lrf": 0.2, "warmup_epochs": 3.0, "warmup_min_iters": 1000, "warmup_bias_lr": 0.1,
    "warmup_momentum": 0.8, "ema": True, "amp": True,
    "loss_gains": {"box": 0.05, "obj": 0.7, "cls": 0.3, "kp": 0.025}, "anchor_t": 4.0, "kp_bbox": KP_BBOX,
    "augment": "kapao",
}
# The CPU presets must learn something in a few minutes on two cores and a few hundred synthetic images, from scratch:
# Adam at a constant lr after a short warm-up, small batches, no EMA, no augmentation, 4x the reference's keypoint and
# class gains (the class gain teaches keypoint types apart, since a P4 cell holds 2-3 types on people 20-150 px tall;
# it does nothing with one class). Not the reference recipe; the measurements behind it are in RECIPES.md.
CPU_RECIPE = {
    "optimizer": "adam", "lr": 4e-3, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "nominal_batch": 8,
    "schedule": "one_cycle", "lrf": 1.0, "warmup_epochs": 0.0, "warmup_min_iters": 50, "warmup_bias_lr": 0.0,
    "warmup_momentum": None, "ema": False, "amp": False,
    "loss_gains": {"box": 0.05, "obj": 0.7, "cls": 1.2, "kp": 0.1}, "anchor_t": 4.0, "kp_bbox": KP_BBOX,
    "augment": "none",
}
SIZES = {"s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "n": (0.33, 0.25), "tiny": (0.33, 0.125)}


def _input_hw(input_size) -> tuple[int, int]:
    """A square side or (height, width); both multiples of the largest stride, 64."""
    return (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)


def _kapao(name, size, input_size, epochs, batch, description, recipe=REFERENCE_RECIPE):
    depth, width = SIZES[size]
    height_width = _input_hw(input_size)
    model_args = {"depth": depth, "width": width, "num_classes": 1 + NUM_KEYPOINTS, "num_keypoints": NUM_KEYPOINTS,
                  "anchors": scaled_anchors(max(height_width))}
    return Preset(name, "kapao", height_width, model_args, dict(recipe, epochs=epochs, batch=batch), description)


def _detector(name, size, input_size, epochs, batch, description, recipe=REFERENCE_RECIPE):
    depth, width = SIZES[size]
    height_width = _input_hw(input_size)
    model_args = {"depth": depth, "width": width, "num_classes": 1, "num_keypoints": 0,
                  "anchors": scaled_anchors(max(height_width))}
    recipe = dict(recipe, loss_gains=dict(recipe["loss_gains"], kp=0.0), augment=recipe["augment"])
    return Preset(name, "person_detector", height_width, model_args,
                  dict(recipe, epochs=epochs, batch=batch), description)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _kapao("kapao-s", "s", 1280, 500, 128, "KAPAO-S (yolov5s6), the reference's COCO recipe"),
    _kapao("kapao-m", "m", 1280, 500, 72, "KAPAO-M (yolov5m6), the reference's COCO recipe"),
    _kapao("kapao-l", "l", 1280, 500, 48, "KAPAO-L (yolov5l6), the reference's COCO recipe"),
    _kapao("kapao-seed-512", "s", 512, 468, 32,
           "founding study's run: KAPAO-S at 512x512, batch 32, 468 epochs, SGD Nesterov"),
    _kapao("kapao-seed-1280", "s", 1280, 118, 16,
           "founding study's run: KAPAO-S at 1280x1280, batch 16, 118 epochs, SGD Nesterov"),
    # 256x320 (height x width): a 4:3 camera frame of 320x240 at its own size, with 16 rows of padding
    _kapao("kapao-tiny", "tiny", (256, 320), 20, 8, "small CPU preset for tests and the demo (its own Adam recipe)",
           CPU_RECIPE),
    _detector("det-s", "s", 640, 300, 64, "person detector for top-down: yolov5s6 body, 1 class, 640 input"),
    _detector("det-n", "n", 640, 300, 64, "person detector for top-down: quarter width, 640 input"),
    # the same 4:3 input as kapao-tiny: at 256x256 its box AP50 was a third (RECIPES.md)
    _detector("det-tiny", "tiny", (256, 320), 30, 8, "small CPU person detector for tests and the demo", CPU_RECIPE),
)}


def build_model(preset: Preset) -> YoloP6:
    a = preset.model_args
    return YoloP6(a["depth"], a["width"], a["num_classes"], a["num_keypoints"], a["anchors"])


def model_meta(preset: Preset) -> ModelMeta:
    a = preset.model_args
    height, width = preset.input_size
    return ModelMeta(
        family=preset.family,
        preset=preset.name,
        input=InputSpec(height, width),  # RGB / 255, as the reference
        keypoints=NAMES if a["num_keypoints"] else (),
        strides=STRIDES,
        anchors=tuple(tuple(tuple(float(v) for v in wh) for wh in level) for level in a["anchors"]),
        num_classes=a["num_classes"],
        extra={"kp_bbox": preset.train_args.get("kp_bbox", KP_BBOX)},
    )
