"""Simple Baselines (Xiao et al., ECCV 2018): a ResNet, three transposed convolutions, a 1x1 conv to heatmaps.

Network (reference §B.1): torchvision ResNet-18/34/50/101/152 without its pooling and classifier (stride 32), then
num_deconv x [ConvTranspose2d(k 4, stride 2, padding 1, 256 filters, no bias) + BatchNorm + ReLU] (stride 32 -> 4)
and a 1x1 Conv2d (with bias) to K heatmaps. Initialisation as the reference: transposed-conv and final-conv weights
N(0, 0.001), final bias 0, BN weight 1 and bias 0; the backbone from ImageNet weights when given
(`load_backbone_weights`), torchvision's default initialisation otherwise.

forward(x: float32 [N, 3, H, W], RGB, (pixel - ImageNet mean) / std) -> heatmaps float32 [N, K, H/4, W/4].
Heatmap pixel (i, j) covers input pixels 4j..4j+3 (columns), 4i..4i+3 (rows); pose_edge.data.topdown_samples documents the
coordinate convention of the targets.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.heatmap_codec import dark_kernel_for_sigma
from pose_edge.keypoints import NAMES, NUM_KEYPOINTS
from pose_edge.model_meta import InputSpec, ModelMeta
from pose_edge.models.preset import Preset

DEPTHS = (18, 34, 50, 101, 152)
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD = (58.395, 57.12, 57.375)
HEATMAP_STRIDE = 4


class SimpleBaseline(nn.Module):
    def __init__(self, depth: int = 50, num_keypoints: int = NUM_KEYPOINTS, deconv_filters: tuple[int, ...] = (256,) * 3,
                 deconv_kernel: int = 4):
        super().__init__()
        if depth not in DEPTHS:
            raise PoseEdgeError(f"ResNet depth must be one of {DEPTHS}, got {depth}")
        if deconv_kernel != 4:
            raise PoseEdgeError("only 4x4 transposed convolutions are supported (stride 2, padding 1)")
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        # The torchvision module names (conv1, bn1, layer1..4) are kept so ImageNet state dicts load as they are.
        self.backbone = nn.Module()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.backbone.add_module(name, getattr(resnet, name))
        channels = resnet.fc.in_features  # 512 for ResNet-18/34, 2048 for 50 and up
        layers: list[nn.Module] = []
        for filters in deconv_filters:
            layers += [nn.ConvTranspose2d(channels, filters, 4, stride=2, padding=1, output_padding=0, bias=False),
                       nn.BatchNorm2d(filters), nn.ReLU(inplace=True)]
            channels = filters
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, num_keypoints, 1)
        self.stride = 32 // 2 ** len(deconv_filters)
        self._init_head()

    def _init_head(self) -> None:
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        return self.final(self.deconv(x))


def load_backbone_weights(model: SimpleBaseline, source: str | Path) -> str:
    """Load ImageNet weights into the backbone; return what was loaded, as a short description.

    source: "imagenet" (torchvision's IMAGENET1K_V1 weights, downloaded or from torch's cache) or a file holding a
    torchvision ResNet state dict (e.g. resnet50-19c8e357.pth; the classifier's fc.* entries are ignored).
    """
    depth = _depth_of(model)
    if str(source) == "imagenet":
        weights = torchvision.models.get_weight(f"ResNet{depth}_Weights.IMAGENET1K_V1")
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # no network, proxy, checksum mismatch: all mean the same thing to the user
            raise PoseEdgeError(f"cannot download the ImageNet ResNet-{depth} weights ({type(e).__name__}); "
                                f"download {weights.url} elsewhere and pass --backbone-weights FILE") from None
        described = f"torchvision {weights}"
    else:
        path = Path(source)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such backbone weights file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ArtifactError(f"{path}: cannot load backbone weights ({str(e).splitlines()[0][:160]})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ArtifactError(f"{path}: expected a ResNet state dict")
        described = str(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise ArtifactError(f"{described}: not ResNet-{depth} weights ({what}, ...)")
    return described


def _depth_of(model: SimpleBaseline) -> int:
    blocks = [len(getattr(model.backbone, f"layer{i}")) for i in range(1, 5)]
    bottleneck = isinstance(model.backbone.layer1[0], torchvision.models.resnet.Bottleneck)
    table = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50,
             (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152}
    return table[(bottleneck, tuple(blocks))]


# -------------------------------------------------------------------------------------------------------- presets
# train_args: the recipe. sigma: target Gaussian sigma in heatmap pixels (2 at 64x48, scaled with the heatmap size).
# augment: a policy name of pose_edge.data.topdown_samples.AUGMENT_POLICIES.

PAPER_RECIPE = {"optimizer": "adam", "lr": 1e-3, "schedule": "multistep", "milestones": (90, 120), "gamma": 0.1,
                "epochs": 140, "batch": 128, "augment": "sb", "amp": True}


def _sb(name: str, depth: int, input_size: tuple[int, int], description: str, deconv_filters=(256, 256, 256),
        **recipe) -> Preset:
    sigma = 2.0 * input_size[0] / 256  # 2 at 256x192 (64x48 maps), 3 at 384x288; a preset may override it
    model_args = {"depth": depth, "num_keypoints": NUM_KEYPOINTS, "deconv_filters": tuple(deconv_filters)}
    return Preset(name, "simple_baseline", input_size, model_args, {**PAPER_RECIPE, "sigma": sigma, **recipe},
                  description)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _sb("sb-r50-256x192", 50, (256, 192), "Simple Baselines ResNet-50, the paper's COCO recipe (140 epochs)"),
    _sb("sb-r50-384x288", 50, (384, 288), "Simple Baselines ResNet-50 at 384x288 (sigma 3), the paper's recipe"),
    _sb("sb-r101-256x192", 101, (256, 192), "Simple Baselines ResNet-101, the paper's recipe"),
    _sb("sb-r152-256x192", 152, (256, 192), "Simple Baselines ResNet-152, the paper's recipe"),
    _sb("sb-r101-384x288", 101, (384, 288), "Simple Baselines ResNet-101 at 384x288 (sigma 3), the paper's recipe"),
    _sb("sb-r152-384x288", 152, (384, 288), "Simple Baselines ResNet-152 at 384x288 (sigma 3), the paper's recipe"),
    # DarkPose's released Simple Baselines weights are at 128x96 (sigma 1; import them with --convention darkpose).
    _sb("sb-r50-128x96", 50, (128, 96), "Simple Baselines ResNet-50 at 128x96 (sigma 1), DarkPose's configs"),
    _sb("sb-r101-128x96", 101, (128, 96), "Simple Baselines ResNet-101 at 128x96 (sigma 1), DarkPose's configs"),
    _sb("sb-r152-128x96", 152, (128, 96), "Simple Baselines ResNet-152 at 128x96 (sigma 1), DarkPose's configs"),
    # The founding study's table says 192x256 in the reference's (width, height) order: the paper's input.
    # Its 70 epochs never reach the 90/120 steps, so the learning rate stays 1e-3.
    _sb("sb-r50-seed", 50, (256, 192), "founding study's run: ResNet-50 192x256 (WxH), batch 96, Adam 1e-3, 70 "
        "epochs, MSE", epochs=70, batch=96),
    # Small enough to learn something in two minutes on two CPU cores, from scratch; not the paper's recipe. Sigma 2 on
    # these 32x24 maps: at sigma 1 the loss sits at the all-zero heatmap's value (RECIPES.md has the search).
    _sb("sb-r18-128x96", 18, (128, 96), "small CPU preset for tests and the demo: ResNet-18 at 128x96",
        lr=1e-3, schedule="multistep", milestones=(), epochs=30, batch=8, augment="none", amp=False, sigma=2.0),
)}


def build_model(preset: Preset) -> SimpleBaseline:
    a = preset.model_args
    return SimpleBaseline(a["depth"], a.get("num_keypoints", NUM_KEYPOINTS), tuple(a.get("deconv_filters", (256,) * 3)))


def model_meta(preset: Preset) -> ModelMeta:
    height, width = preset.input_size
    sigma = float(preset.train_args.get("sigma", 2.0))
    return ModelMeta(
        family="simple_baseline",
        preset=preset.name,
        input=InputSpec(height, width, mean=IMAGENET_MEAN, std=IMAGENET_STD, color="RGB"),
        keypoints=NAMES[: preset.model_args.get("num_keypoints", NUM_KEYPOINTS)],
        heatmap_stride=HEATMAP_STRIDE,
        extra={"sigma": sigma, "dark_kernel": dark_kernel_for_sigma(sigma),
               "heatmap_size": [height // HEATMAP_STRIDE, width // HEATMAP_STRIDE]},
    )
