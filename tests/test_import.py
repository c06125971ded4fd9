"""`pose-edge import`: published checkpoints in the originals' layouts -> run folders, with no pickled code run.

The checkpoints are generated here from small stand-ins laid out as the originals' training scripts save them:
Simple Baselines' PoseResNet (torchvision's ResNet names + deconv_layers + final_layer) as a plain state dict,
inside {'state_dict': ...}, with DataParallel's 'module.' prefix, and in PyTorch 0.4's legacy format; KAPAO's
YOLOv5-style Model pickled under the original module paths (models.yolo, models.common), model and EMA in half
precision. The stand-in classes live in fake modules that are removed before loading, so a loader that tried to
import them would fail. The stand-ins compute their outputs their own way (the YOLOv5 model routes through its layer
list by index), so equal outputs show that the mapping and our architecture agree with the layout.
scripts/check_against_originals.py does the same against the original code itself.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

from pose_edge.cli import main
from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.models import build_model, get_preset
from pose_edge.models.checkpoint import load_model
from pose_edge.models.published import import_checkpoint
from pose_edge.models.safe_unpickle import UnsafePickleError, load_untrusted, module_state_dict


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so that a wrong mapping changes outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
            m.num_batches_tracked.fill_(1234)
    return model


# ------------------------------------------------------------------------------------- Simple Baselines stand-in


class PoseResNet(nn.Module):
    """The original's network (lib/models/pose_resnet.py) as its state dict names it: torchvision's ResNet modules at
    the top level, deconv_layers = 3 x [ConvTranspose2d(4, stride 2, padding 1, no bias), BN, ReLU], final_layer."""

    def __init__(self, depth: int):
        super().__init__()
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(resnet, name))
        layers, channels = [], resnet.fc.in_features
        for _ in range(3):
            layers += [nn.ConvTranspose2d(channels, 256, 4, 2, 1, 0, bias=False), nn.BatchNorm2d(256), nn.ReLU(True)]
            channels = 256
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(256, 17, 1)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def _save_sb(model: PoseResNet, layout: str, path) -> None:
    """As pose_estimation/train.py saves: final_state (model.module.state_dict()), model_best (the DataParallel
    state dict), checkpoint ({'epoch', 'model', 'state_dict', 'perf', 'optimizer'}); legacy = PyTorch 0.4.0's format
    and its BN without num_batches_tracked."""
    parallel = nn.DataParallel(model)  # on the CPU it only wraps: its state dict has the 'module.' prefix
    if layout == "final_state":
        obj = model.state_dict()
    elif layout == "model_best":
        obj = parallel.state_dict()
    elif layout == "checkpoint":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        obj = {"epoch": 140, "model": "pose_resnet", "state_dict": parallel.state_dict(), "perf": np.float64(0.704),
               "optimizer": optimizer.state_dict()}
    elif layout == "legacy_0.4":
        obj = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    else:
        raise ValueError(layout)
    torch.save(obj, path, _use_new_zipfile_serialization=layout != "legacy_0.4")


@pytest.fixture(scope="module")
def sb_r18():
    torch.manual_seed(0)
    return _randomise_bn(PoseResNet(18), 1).eval()


@pytest.mark.parametrize("layout", ["final_state", "model_best", "checkpoint", "legacy_0.4"])
def test_simple_baselines_layouts_import_tensor_for_tensor(sb_r18, layout, tmp_path):
    src = tmp_path / "pose_resnet_18_128x96.pth.tar"
    _save_sb(sb_r18, layout, src)
    run = import_checkpoint(src, "sb-r18-128x96", tmp_path / "run")
    model, meta, _ = load_model(run)
    ours = model.state_dict()
    for key, tensor in sb_r18.state_dict().items():
        mapped = ("backbone." + key if key.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
                  else key.replace("deconv_layers.", "deconv.").replace("final_layer.", "final."))
        if layout == "legacy_0.4" and key.endswith("num_batches_tracked"):
            assert ours[mapped].item() == 0
        else:
            assert torch.equal(ours[mapped], tensor), key
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(model(x), sb_r18(x))
    assert meta.input.color == "BGR" and meta.extra["imported_from"]["format"] == "simple_baselines"
    report = json.loads((run / "import.json").read_text())
    assert report["tensors"] == len(ours) and ("module." in report["layout"]) == (layout != "final_state" and
                                                                                   layout != "legacy_0.4")


def test_simple_baselines_colour_order_reaches_the_onnx_graph(sb_r18, tmp_path):
    """The original feeds cv2's BGR pixels, ToTensor and ImageNet's RGB mean/std in channel order. The exported
    graph takes uint8 BGR and must give the original's heatmaps for the same image."""
    from pose_edge.export.onnx_export import export_onnx
    from pose_edge.runtime.ort_backend import OrtBackend

    src = tmp_path / "final_state.pth.tar"
    _save_sb(sb_r18, "final_state", src)
    model, meta, _ = load_model(import_checkpoint(src, "sb-r18-128x96", tmp_path / "run"))
    export_onnx(model, meta, tmp_path / "m.onnx")
    image = np.random.default_rng(0).integers(0, 256, (1, 128, 96, 3), dtype=np.uint8)  # BGR, as cv2 reads
    x = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255  # ToTensor, no colour conversion
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    with torch.no_grad():
        expected = sb_r18((x - mean) / std).numpy()
    got = OrtBackend(tmp_path / "m.onnx", providers=("CPUExecutionProvider",)).run(image)[0]
    assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()
    wrong_order = OrtBackend(tmp_path / "m.onnx", providers=("CPUExecutionProvider",)).run(image[..., ::-1].copy())[0]
    assert np.abs(wrong_order - expected).max() > 1e-2 * np.abs(expected).max()  # the check can tell the orders apart


def test_paper_simple_baseline_maps_every_key(tmp_path):
    """ResNet-50 at 256x192: every key of the original layout maps, with its shape (no forward)."""
    torch.manual_seed(0)
    src = tmp_path / "pose_resnet_50_256x192.pth.tar"
    _save_sb(PoseResNet(50), "checkpoint", src)
    run = import_checkpoint(src, "sb-r50-256x192", tmp_path / "run")
    assert json.loads((run / "import.json").read_text())["tensors"] == len(build_model("sb-r50-256x192").state_dict())


def test_simple_baseline_of_another_depth_is_refused_naming_the_tensor(sb_r18, tmp_path):
    src = tmp_path / "r18.pth.tar"
    _save_sb(sb_r18, "final_state", src)
    with pytest.raises(ArtifactError, match=r"tensor layer1\.0\.conv1\.weight \[64, 64, 3, 3\] does not fit "
                                            r"sb-r50-256x192's backbone\.layer1\.0\.conv1\.weight \[64, 64, 1, 1\]"):
        import_checkpoint(src, "sb-r50-256x192", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unmapped_and_missing_tensors_are_named(sb_r18, tmp_path):
    state = sb_r18.state_dict()
    extra = dict(state, **{"extra_head.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ArtifactError, match="1 tensors have no counterpart in sb-r18-128x96: extra_head.weight"):
        import_checkpoint(tmp_path / "extra.pth", "sb-r18-128x96", tmp_path / "a")
    short = {k: v for k, v in state.items() if not k.startswith("final_layer.")}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(ArtifactError, match="2 tensors of sb-r18-128x96 are missing from the checkpoint: "
                                            "final.weight, final.bias"):
        import_checkpoint(tmp_path / "short.pth", "sb-r18-128x96", tmp_path / "b")


# ------------------------------------------------------------------------------------------ KAPAO stand-in (YOLOv5)

# The network of models/yolov5{s,m,l}6.yaml as (from, repeats, module, args); channels and repeats are scaled by the
# width and depth multiples when the model is built.
P6_LAYERS = [
    (-1, 1, "Focus", [64, 3]), (-1, 1, "Conv", [128, 3, 2]), (-1, 3, "C3", [128]), (-1, 1, "Conv", [256, 3, 2]),
    (-1, 9, "C3", [256]), (-1, 1, "Conv", [512, 3, 2]), (-1, 9, "C3", [512]), (-1, 1, "Conv", [768, 3, 2]),
    (-1, 3, "C3", [768]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 1, "SPP", [1024, [3, 5, 7]]),
    (-1, 3, "C3", [1024, False]),
    (-1, 1, "Conv", [768, 1, 1]), (-1, 1, "Upsample", []), ([-1, 8], 1, "Concat", []), (-1, 3, "C3", [768, False]),
    (-1, 1, "Conv", [512, 1, 1]), (-1, 1, "Upsample", []), ([-1, 6], 1, "Concat", []), (-1, 3, "C3", [512, False]),
    (-1, 1, "Conv", [256, 1, 1]), (-1, 1, "Upsample", []), ([-1, 4], 1, "Concat", []), (-1, 3, "C3", [256, False]),
    (-1, 1, "Conv", [256, 3, 2]), ([-1, 20], 1, "Concat", []), (-1, 3, "C3", [512, False]),
    (-1, 1, "Conv", [512, 3, 2]), ([-1, 16], 1, "Concat", []), (-1, 3, "C3", [768, False]),
    (-1, 1, "Conv", [768, 3, 2]), ([-1, 12], 1, "Concat", []), (-1, 3, "C3", [1024, False]),
    ([23, 26, 29, 32], 1, "Detect", []),
]


def _yolo_classes(run_marker=None) -> dict[str, type]:
    """Stand-ins of the original classes, named as the original's modules name them. run_marker: a file that any
    code of theirs run at load time would create (their __setstate__)."""

    def touch(self, state):
        if run_marker is not None:
            open(run_marker, "w").close()
        nn.Module.__setstate__(self, state)

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Focus(nn.Module):
        def __init__(self, c1, c2, k=1):
            super().__init__()
            self.conv = Conv(4 * c1, c2, k)

        def forward(self, x):
            return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]],
                                       1))

    class Bottleneck(nn.Module):
        def __init__(self, c1, c2, shortcut=True):
            super().__init__()
            self.cv1, self.cv2, self.add = Conv(c1, c2, 1), Conv(c2, c2, 3), shortcut and c1 == c2

        def forward(self, x):
            return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))

    class C3(nn.Module):
        def __init__(self, c1, c2, n=1, shortcut=True):
            super().__init__()
            c = c2 // 2
            self.cv1, self.cv2, self.cv3 = Conv(c1, c, 1), Conv(c1, c, 1), Conv(2 * c, c2, 1)
            self.m = nn.Sequential(*(Bottleneck(c, c, shortcut) for _ in range(n)))

        def forward(self, x):
            return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))

    class SPP(nn.Module):
        def __init__(self, c1, c2, k=(5, 9, 13)):
            super().__init__()
            c = c1 // 2
            self.cv1, self.cv2 = Conv(c1, c, 1), Conv(c * (len(k) + 1), c2, 1)
            self.m = nn.ModuleList(nn.MaxPool2d(size, 1, size // 2) for size in k)

        def forward(self, x):
            x = self.cv1(x)
            return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))

    class Concat(nn.Module):
        def __init__(self, dimension=1):
            super().__init__()
            self.d = dimension

        def forward(self, xs):
            return torch.cat(xs, self.d)

    class Detect(nn.Module):
        def __init__(self, nc, anchors_px, ch, strides, num_coords):
            super().__init__()
            self.nc, self.no, self.nl, self.na = nc, nc + num_coords + 5, len(anchors_px), len(anchors_px[0])
            self.num_coords, self.inplace = num_coords, True
            pixels = torch.tensor(anchors_px, dtype=torch.float32)
            self.stride = torch.tensor(strides, dtype=torch.float32)
            self.register_buffer("anchors", pixels / self.stride.view(-1, 1, 1))  # grid cells
            self.register_buffer("anchor_grid", pixels.clone().view(self.nl, 1, -1, 1, 1, 2))  # pixels
            self.grid = [torch.zeros(1)] * self.nl
            self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

        def forward(self, xs):  # the raw grids, before the original's view/permute
            return [conv(x) for conv, x in zip(self.m, xs)]

    class Model(nn.Module):
        def __init__(self, depth, width, nc, num_coords, anchors_px, strides=(8, 16, 32, 64)):
            super().__init__()

            def ch_of(c):
                return math.ceil(c * width / 8) * 8

            layers, ch = [], [3]
            for i, (f, n, kind, args) in enumerate(P6_LAYERS):
                n = max(round(n * depth), 1) if n > 1 else n
                c_in = ch[f] if isinstance(f, int) else None
                if kind in ("Conv", "Focus", "SPP"):
                    c_out = ch_of(args[0])
                    m = {"Conv": Conv, "Focus": Focus, "SPP": SPP}[kind](c_in, c_out, *args[1:])
                elif kind == "C3":
                    c_out = ch_of(args[0])
                    m = C3(c_in, c_out, n, *args[1:])
                elif kind == "Upsample":
                    c_out, m = c_in, nn.Upsample(None, 2, "nearest")
                elif kind == "Concat":
                    c_out, m = sum(ch[j] for j in f), Concat(1)
                else:
                    c_out, m = None, Detect(nc, anchors_px, [ch[j] for j in f], strides, num_coords)
                m.i, m.f, m.type = i, f, kind
                layers.append(m)
                ch = ch[1:] if i == 0 else ch
                ch.append(c_out)
            self.model = nn.Sequential(*layers)
            self.save = sorted({j % i for i, (f, *_) in enumerate(P6_LAYERS)
                                for j in ([f] if isinstance(f, int) else f) if j != -1})
            self.stride = torch.tensor(strides, dtype=torch.float32)
            self.yaml = {"nc": nc + num_coords, "depth_multiple": depth, "width_multiple": width}
            self.names = [str(i) for i in range(nc)]
            self.num_coords, self.nc, self.hyp, self.gr = num_coords, nc, {"kp_bbox": 0.05}, 1.0

        def forward(self, x):
            outputs = []
            for m in self.model:
                if m.f != -1:
                    x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
                x = m(x)
                outputs.append(x if m.i in self.save else None)
            return x

    classes = {"Conv": Conv, "Focus": Focus, "Bottleneck": Bottleneck, "C3": C3, "SPP": SPP, "Concat": Concat,
               "Detect": Detect, "Model": Model}
    if run_marker is not None:
        for cls in classes.values():
            cls.__setstate__ = touch
    return classes


@contextlib.contextmanager
def original_modules(run_marker=None):
    """Register the stand-ins as models.common.* and models.yolo.*, as the original code defines them; remove the
    modules on exit (unless run_marker is given: then they stay importable while loading, to show nothing runs)."""
    classes = _yolo_classes(run_marker)
    package = types.ModuleType("models")
    package.__path__ = []
    modules = {"models": package, "models.common": types.ModuleType("models.common"),
               "models.yolo": types.ModuleType("models.yolo")}
    for name, cls in classes.items():
        module = "models.yolo" if name in ("Model", "Detect") else "models.common"
        cls.__module__, cls.__qualname__ = module, name
        setattr(modules[module], name, cls)
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    try:
        yield classes
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _standin(classes, preset_name: str, seed: int, anchors=None):
    a = get_preset(preset_name).model_args
    torch.manual_seed(seed)
    model = classes["Model"](a["depth"], a["width"], a["num_classes"], 2 * a["num_keypoints"],
                             anchors if anchors is not None else a["anchors"])
    return _randomise_bn(model, seed).eval()


def _save_kapao(classes, model, ema, path, stripped=False):
    """As KAPAO's train.py saves (both half); strip_optimizer's form puts the EMA under 'model' and None under
    'ema'."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    ckpt = {"epoch": 499, "best_fitness": np.array([0.63])[0], "model": copy.deepcopy(model).half(),
            "ema": copy.deepcopy(ema).half(), "updates": 123456, "optimizer": optimizer.state_dict(),
            "wandb_id": None}
    if stripped:
        ckpt.update(model=ckpt["ema"], ema=None, optimizer=None, updates=None, epoch=-1)
    torch.save(ckpt, path)


@pytest.mark.parametrize("stripped", [False, True], ids=["training", "strip_optimizer"])
def test_kapao_pickled_model_imports_the_half_ema(stripped, tmp_path):
    src = tmp_path / "kapao_tiny.pt"
    with original_modules() as classes:
        model = _standin(classes, "kapao-tiny", 0)
        ema = _perturbed(model, 1)
        _save_kapao(classes, model, ema, src, stripped)
    assert "models.yolo" not in sys.modules  # the original classes cannot be imported while loading
    run = import_checkpoint(src, "kapao-tiny", tmp_path / "run")
    ours, meta, _ = load_model(run)
    assert all(t.dtype in (torch.float32, torch.int64) for t in ours.state_dict().values())

    expected = copy.deepcopy(ema).half().float().eval()  # what the file holds, back in float32
    theirs = dict(expected.state_dict())
    for key, tensor in theirs.items():
        if key.startswith("model.33.anchor"):
            continue
        index, rest = int(key.split(".")[1]), key.split(".", 2)[2]
        name = "head." + rest[2:] if index == 33 else f"{_OUR_LAYER[index]}.{rest}"
        assert torch.equal(ours.state_dict()[name], tensor), key
    x = torch.rand(1, 3, 256, 320)
    with torch.no_grad():
        for a, b in zip(ours(x), expected(x)):
            assert torch.equal(a, b)
        assert not torch.equal(ours(x)[0], model.half().float()(x)[0])  # the EMA, not the raw model
    assert meta.anchors == tuple(tuple(tuple(float(v) for v in wh) for wh in level)
                                 for level in get_preset("kapao-tiny").model_args["anchors"])
    report = json.loads((run / "import.json").read_text())
    assert report["anchors_differ"] is False and ("under 'ema'" in report["layout"]) == (not stripped)


# Our module for each of the original's layer indices, written out for the test (Upsample/Concat layers have none).
_OUR_LAYER = dict(enumerate(["stem", "p2.0", "p2.1", "p3.0", "p3.1", "p4.0", "p4.1", "p5.0", "p5.1", "p6.0", "p6.1",
                             "p6.2", "lat6", None, None, "td5", "lat5", None, None, "td4", "lat4", None, None, "out3",
                             "down3", None, "out4", "down4", None, "out5", "down5", None, "out6"]))


def _perturbed(model, seed):
    ema = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return ema


def test_kapao_anchors_changed_in_training_are_carried_into_the_run(tmp_path):
    preset = get_preset("kapao-tiny")
    changed = [[(w * 1.25, h * 0.75) for w, h in level] for level in preset.model_args["anchors"]]
    src = tmp_path / "autoanchor.pt"
    with original_modules() as classes:
        model = _standin(classes, "kapao-tiny", 2, anchors=changed)
        _save_kapao(classes, model, model, src)
    run = import_checkpoint(src, "kapao-tiny", tmp_path / "run")
    _, meta, _ = load_model(run)
    stored = torch.tensor(changed).half().float().numpy()  # the file holds them in half precision
    assert np.allclose(np.array(meta.anchors), stored, atol=1e-3)
    assert np.allclose(np.array(json.loads((run / "meta.json").read_text())["anchors"]), stored, atol=1e-3)
    assert json.loads((run / "import.json").read_text())["anchors_differ"] is True


def test_paper_kapao_maps_every_key_and_another_size_is_refused(tmp_path):
    """KAPAO-S: every tensor of the original layout maps with its shape; imported as KAPAO-M it is refused, naming
    the first tensor that does not fit."""
    src = tmp_path / "kapao_s_coco.pt"
    with original_modules() as classes:
        model = _standin(classes, "kapao-s", 3)
        _save_kapao(classes, model, model, src, stripped=True)
    run = import_checkpoint(src, "kapao-s", tmp_path / "s")
    ours = load_model(run)[0].state_dict()
    theirs = module_state_dict(load_untrusted(src)["model"])
    assert len(theirs) - 2 == len(ours)  # all but Detect's anchors and anchor_grid
    with pytest.raises(ArtifactError, match=r"tensor model\.0\.conv\.conv\.weight \[32, 12, 3, 3\] does not fit "
                                            r"kapao-m's stem\.conv\.conv\.weight \[48, 12, 3, 3\]"):
        import_checkpoint(src, "kapao-m", tmp_path / "m")


def test_wrong_family_says_which_checkpoint_it_is(sb_r18, tmp_path):
    torch.save(sb_r18.state_dict(), tmp_path / "sb.pth")
    with pytest.raises(ArtifactError, match="not a KAPAO checkpoint.*a Simple Baselines checkpoint"):
        import_checkpoint(tmp_path / "sb.pth", "kapao-tiny", tmp_path / "a")
    with original_modules() as classes:
        model = _standin(classes, "kapao-tiny", 0)
        _save_kapao(classes, model, model, tmp_path / "k.pt")
    with pytest.raises(ArtifactError, match="not a Simple Baselines checkpoint.*a KAPAO checkpoint"):
        import_checkpoint(tmp_path / "k.pt", "sb-r18-128x96", tmp_path / "b")


# ---------------------------------------------------------------------------------------- nothing from the file runs


class _Payload:
    """An object whose unpickling calls `call(*args)`: how a malicious checkpoint runs code."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_code_running_pickles_are_refused_and_nothing_runs(how, tmp_path):
    marker = tmp_path / "marker"
    call, args = {
        "os.system": (os.system, (f"touch {marker}",)),
        "builtins.eval": (builtins.eval, (f"open({str(marker)!r}, 'w')",)),
        "builtins.exec": (builtins.exec, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.call": (subprocess.call, (["touch", str(marker)],)),
    }[how]
    src = tmp_path / "evil.pt"
    with original_modules() as classes:
        model = _standin(classes, "kapao-tiny", 0)
        torch.save({"epoch": 1, "model": model.half(), "ema": None, "wandb_id": _Payload(call, args)}, src)
    name = {"os.system": "system", "builtins.eval": "builtins.eval", "builtins.exec": "builtins.exec",
            "subprocess.call": "subprocess.call"}[how]
    with pytest.raises(UnsafePickleError, match=rf"evil\.pt: refused, it needs \S*{name}, which a checkpoint never "
                                                r"needs; nothing from the file was run"):
        import_checkpoint(src, "kapao-tiny", tmp_path / "run")
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_calling_any_other_global_is_refused(tmp_path):
    """A call through a name outside the standard library (here a function of the fake original module) is refused
    too: only making objects of a class, which runs nothing here, is allowed."""
    marker = tmp_path / "marker"
    src = tmp_path / "evil.pt"
    with original_modules() as classes:
        helper = types.FunctionType((lambda path: open(path, "w")).__code__, {"open": open}, "touch")
        helper.__module__, helper.__qualname__ = "models.yolo", "touch"
        sys.modules["models.yolo"].touch = helper
        torch.save({"model": _standin(classes, "kapao-tiny", 0), "x": _Payload(helper, (str(marker),))}, src)
    with pytest.raises(UnsafePickleError, match="it calls models.yolo.touch"):
        load_untrusted(src)
    assert not marker.exists()


def test_the_original_classes_never_run_even_when_importable(tmp_path):
    """With the stand-in modules still importable and their __setstate__ writing a marker, loading makes
    placeholders only: the marker stays absent."""
    marker = tmp_path / "marker"
    src = tmp_path / "k.pt"
    with original_modules(run_marker=marker) as classes:
        model = _standin(classes, "kapao-tiny", 0)
        _save_kapao(classes, model, model, src)
        marker.unlink(missing_ok=True)  # saving deep-copies the model, which runs __setstate__
        run = import_checkpoint(src, "kapao-tiny", tmp_path / "run")
        assert not marker.exists()
        torch.load(src, weights_only=False)  # the plain loader does run their code: the marker can appear
        assert marker.exists()
    assert (run / "best.pt").is_file()


def test_damaged_file_is_one_line_naming_it(sb_r18, tmp_path):
    src = tmp_path / "cut.pth.tar"
    _save_sb(sb_r18, "checkpoint", src)
    src.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(ArtifactError, match=r"cut\.pth\.tar: cannot read it as a torch checkpoint"):
        import_checkpoint(src, "sb-r18-128x96", tmp_path / "run")


# ------------------------------------------------------------------------------------------------------------- CLI


def test_cli_import_then_export_with_the_stored_anchors(tmp_path):
    preset = get_preset("kapao-tiny")
    changed = [[(w * 1.5, h) for w, h in level] for level in preset.model_args["anchors"]]
    src = tmp_path / "kapao_tiny.pt"
    with original_modules() as classes:
        model = _standin(classes, "kapao-tiny", 4, anchors=changed)
        _save_kapao(classes, model, model, src)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["import", str(src), "--preset", "kapao-tiny", "--out", str(run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["run_dir"] == str(run) and report["anchors_differ"] is True
    again = CliRunner().invoke(main, ["import", str(src), "--preset", "kapao-tiny", "--out", str(run)])
    assert again.exit_code == 1 and "already exists" in again.output and len(again.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["export", str(run), "--engine", "onnx", "--json"])
    assert result.exit_code == 0, result.output
    from pose_edge.runtime.ort_backend import OrtBackend

    onnx_file = next(run.rglob("*.onnx"))
    meta = OrtBackend(onnx_file, providers=("CPUExecutionProvider",)).meta
    assert np.allclose(np.array(meta.anchors), torch.tensor(changed).half().float().numpy(), atol=1e-3)


def test_cli_refusal_is_one_line(tmp_path):
    src = tmp_path / "evil.pt"
    torch.save({"model": _Payload(os.system, ("true",))}, src)
    result = CliRunner().invoke(main, ["import", str(src), "--preset", "kapao-tiny", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "system" in result.output and "refused" in result.output


def test_unknown_preset_is_a_pose_edge_error(tmp_path):
    with pytest.raises(PoseEdgeError, match="unknown preset"):
        import_checkpoint(tmp_path / "x.pt", "sb-r9", tmp_path / "run")
