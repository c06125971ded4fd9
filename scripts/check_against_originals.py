"""Check `pose-edge import` against the original code: same raw outputs, same keypoints.

    python scripts/check_against_originals.py ORIGINAL_CHECKOUT... [--out FILE.md] [--quick]

Each checkout is a clone of one of
    microsoft/human-pose-estimation.pytorch   Simple Baselines (lib/models/pose_resnet.py, lib/core/inference.py)
    ilovepose/DarkPose                         the same PoseResNet, DARK decoding (lib/core/inference.py)
    wmcnally/kapao                             KAPAO (models/yolo.py, val.py)
None of their code is part of pose-edge: this script imports it from the checkout you point it at, in a separate
process per checkout (both name their packages `models` and `utils`), so it needs their requirements in the
environment (PyYAML, easydict, yacs, pandas, requests, seaborn, scipy, tqdm, matplotlib, opencv).

For every model it checks:
  1. raw outputs: the original network (built from its own definition and config, random weights with non-trivial
     BatchNorm statistics) saved as the original training script saves it, imported with `import_checkpoint`, run on
     the same float input: the largest difference must be 0 in FP32.
  2. input preparation: the same uint8 BGR image through the original's transform and through pose-edge's backend
     (the imported meta): differences at float rounding only.
  3. geometry and post-processing through pose-edge's own path: the imported meta's convention (ModelMeta.convention,
     set by the importer) drives the top-down pipeline (pose_edge.runtime.topdown.TopDownPipeline) on a large image
     with person boxes, with a stand-in backend that returns planted heatmaps (a trained network's kind of output).
     The crops it hands the backend must be the original's crops (cv2.warpAffine with its get_affine_transform, to 1
     grey level), and its keypoints the original's get_final_preds of the same heatmaps, with and without the flip
     test as the original's validate does it (within 0.1 px); DARK's blur weights must be OpenCV's, and the blur
     kernel in the imported meta the config's. The offset that pose-edge's own convention would give instead is
     reported (what decoding imported weights without their convention costs).
  4. KAPAO's published settings: the rectangular letterbox's canvas (--rect) against the original's dataset loader,
     the test-time-augmentation inputs against its scale_img and the rows' de-scaling and de-flipping against its
     _descale_pred, and the post-processing with clipping (Settings.clip) against val.py's for people across the
     image border.
Exit status 1 if a check fails. The report (Markdown, with the machine) goes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("simple_baselines", "darkpose", "kapao")


def detect_kind(checkout: Path) -> str:
    if (checkout / "models" / "yolo.py").is_file() and (checkout / "val.py").is_file():
        return "kapao"
    if (checkout / "lib" / "models" / "pose_resnet.py").is_file():
        inference = (checkout / "lib" / "core" / "inference.py").read_text()
        return "darkpose" if "def taylor" in inference else "simple_baselines"
    raise SystemExit(f"{checkout}: not a checkout of human-pose-estimation.pytorch, DarkPose or kapao")


def check(results: list, name: str, value: float, limit: float | None, detail: str = "") -> None:
    """Record one comparison; limit None = reported only."""
    ok = None if limit is None else bool(value <= limit)
    results.append({"check": name, "value": float(value), "limit": limit, "ok": ok, "detail": detail})
    status = "info" if ok is None else ("ok" if ok else "FAIL")
    print(f"  [{status}] {name}: {value:.3g}{'' if limit is None else f' (limit {limit:g})'} {detail}",
          file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- shared pieces


def randomise(model, seed: int):
    """Non-trivial BatchNorm statistics and affine terms (fresh BN is an identity), deterministic per seed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def gaussian_heatmaps(rng, n: int, k: int, h: int, w: int, sigma: float, noise: float = 0.01):
    """float32 [n, k, h, w]: one Gaussian per map (peak 0.3..1) at a random sub-pixel point inside the map, plus
    small noise: what a trained network outputs, for comparing decoders."""
    import numpy as np

    cx = rng.uniform(1, w - 2, (n, k, 1, 1))
    cy = rng.uniform(1, h - 2, (n, k, 1, 1))
    peak = rng.uniform(0.3, 1.0, (n, k, 1, 1))
    xs, ys = np.arange(w)[None, None, None, :], np.arange(h)[None, None, :, None]
    maps = peak * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return (maps + rng.normal(0, noise, maps.shape)).astype(np.float32)


def boxes_inside(rng, n: int, width: int, height: int):
    """COCO boxes [n, 4] (x, y, w, h) of people-like sizes lying inside a width x height image (so that the
    pipeline's clipping of boxes to the frame changes none of them)."""
    import numpy as np

    w = rng.uniform(20, 300, n)
    h = w * rng.uniform(1.0, 3.5, n)
    return np.stack([rng.uniform(0, width - w - 1), rng.uniform(0, height - h - 1), w, h], 1)


class PlantedHeatmaps:
    """A stand-in backend with a model's meta: run(crops) keeps the crops and returns the next planted heatmaps."""

    def __init__(self, meta, heatmaps):
        self.meta, self.heatmaps, self.inputs = meta, heatmaps, []

    def run(self, images):
        self.inputs.append(images.copy())
        return [self.heatmaps[:len(images)].copy()]


def box_to_center_scale(box, aspect: float, kind: str):
    """The original's box -> (centre, scale) rule (lib/dataset/coco.py, _xywh2cs), in its units: the centre of the
    box (Simple Baselines: x + w/2; DarkPose: x + (w - 1)/2); the shorter side grown to the input's aspect ratio
    (w / h); then both sides / 200 (pixel_std) x 1.25."""
    import numpy as np

    x, y, w, h = box
    if kind == "simple_baselines":
        center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
    else:
        center = np.array([x + (w - 1) * 0.5, y + (h - 1) * 0.5], np.float32)
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return center, np.array([w / 200.0, h / 200.0], np.float32) * 1.25


# ------------------------------------------------------------------------------------ Simple Baselines and DarkPose

SB_CASES = [  # (config under experiments/coco, preset); the first is checked in every saved layout
    ("resnet50/256x192_d256x3_adam_lr1e-3.yaml", "sb-r50-256x192"),
    ("resnet50/384x288_d256x3_adam_lr1e-3.yaml", "sb-r50-384x288"),
    ("resnet101/256x192_d256x3_adam_lr1e-3.yaml", "sb-r101-256x192"),
    ("resnet101/384x288_d256x3_adam_lr1e-3.yaml", "sb-r101-384x288"),
    ("resnet152/256x192_d256x3_adam_lr1e-3.yaml", "sb-r152-256x192"),
    ("resnet152/384x288_d256x3_adam_lr1e-3.yaml", "sb-r152-384x288"),
]
DARK_CASES = [  # (config, preset or None: decoding only)
    ("resnet/res50_256x192_d256x3_adam_lr1e-3.yaml", "sb-r50-256x192"),
    ("resnet/res50_384x288_d256x3_adam_lr1e-3.yaml", None),
    ("resnet/res50_128x96_d256x3_adam_lr1e-3.yaml", "sb-r50-128x96"),
]
FLIP_PAIRS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]


def _load_sb_config(kind: str, checkout: Path, relative: str):
    if kind == "simple_baselines":
        import yaml

        # Environment shim: the original calls yaml.load(f) without a Loader, which PyYAML 6 no longer accepts.
        plain_load = yaml.load
        yaml.load = lambda stream, Loader=yaml.SafeLoader: plain_load(stream, Loader=Loader)
        from core.config import config, update_config

        update_config(str(checkout / "experiments" / "coco" / relative))
        return config
    from config import cfg, update_config

    args = argparse.Namespace(cfg=str(checkout / "experiments" / "coco" / relative), opts=[], modelDir="",
                              logDir="", dataDir="")
    cfg.defrost()
    update_config(cfg, args)
    return cfg


def _save_sb_layouts(net, directory: Path, layouts) -> dict:
    """The checkpoint files the original's train.py writes (pose_estimation/train.py, tools/train.py in DarkPose)."""
    import numpy as np
    import torch

    parallel = torch.nn.DataParallel(net)  # what train.py wraps the model in; on the CPU it only wraps
    files = {}
    for layout in layouts:
        path = directory / f"{layout}.pth.tar"
        if layout == "final_state":  # torch.save(model.module.state_dict(), final_model_state_file)
            torch.save(net.state_dict(), path)
        elif layout == "model_best":  # save_checkpoint: torch.save(states['state_dict'], model_best.pth.tar)
            torch.save(parallel.state_dict(), path)
        else:  # save_checkpoint: the whole states dict
            torch.save({"epoch": 140, "model": "pose_resnet", "state_dict": parallel.state_dict(),
                        "perf": np.float64(0.704), "optimizer": torch.optim.Adam(net.parameters()).state_dict()},
                       path)
        files[layout] = path
    return files


def check_heatmap_models(kind: str, checkout: Path, quick: bool) -> list:
    import numpy as np
    import torch
    import torchvision.transforms as T

    sys.path.insert(0, str(checkout / "lib"))
    import models.pose_resnet as pose_resnet
    from core.inference import get_final_preds
    from utils.transforms import flip_back, get_affine_transform

    import dataclasses

    import cv2

    from pose_edge.model_meta import InputSpec, ModelMeta
    from pose_edge.models.checkpoint import load_model
    from pose_edge.models.published import import_checkpoint, with_convention
    from pose_edge.models.torch_backend import TorchBackend
    from pose_edge.runtime.heatmap_decode import dark_blur_weights
    from pose_edge.runtime.settings import TopDownSettings
    from pose_edge.runtime.topdown import TopDownPipeline, codec_for
    from pose_edge.runtime.topdown import flip_back as our_flip_back

    results: list = []
    cases = SB_CASES if kind == "simple_baselines" else DARK_CASES
    if quick:
        cases = cases[:1]
    rng = np.random.default_rng(0)
    for index, (relative, preset) in enumerate(cases):
        config = _load_sb_config(kind, checkout, relative)
        w_in, h_in = (int(v) for v in config.MODEL.IMAGE_SIZE)
        extra = config.MODEL.EXTRA if kind == "simple_baselines" else config.MODEL  # where each keeps them
        w_hm, h_hm = (int(v) for v in extra.HEATMAP_SIZE)
        name = f"{kind} {relative}"
        print(f"{name}", file=sys.stderr, flush=True)

        if preset is not None:
            torch.manual_seed(index)
            net = randomise(pose_resnet.get_pose_net(config, is_train=False), index).eval()
            layouts = ("final_state", "model_best", "checkpoint") if index == 0 else ("checkpoint",)
            with tempfile.TemporaryDirectory() as tmp:
                files = _save_sb_layouts(net, Path(tmp), layouts)
                x = torch.randn(2, 3, h_in, w_in, generator=torch.Generator().manual_seed(index))
                with torch.no_grad():
                    expected = net(x)
                for layout, path in files.items():
                    ours, meta, _ = load_model(import_checkpoint(path, preset, Path(tmp) / f"run-{layout}",
                                                                 convention=kind))
                    with torch.no_grad():
                        diff = (ours(x) - expected).abs().max().item()
                    check(results, f"{name}: raw heatmaps, {layout} -> {preset}", diff, 0.0,
                          f"(largest abs(ours - original), FP32, input {h_in}x{w_in}, batch 2)")

                # The original's input: cv2's BGR image, ToTensor, Normalize with ImageNet's RGB statistics.
                image = rng.integers(0, 256, (1, h_in, w_in, 3), dtype=np.uint8)
                transform = T.Compose([T.ToTensor(), T.Normalize(mean=[0.485, 0.456, 0.406],
                                                                 std=[0.229, 0.224, 0.225])])
                with torch.no_grad():
                    original = net(transform(image[0]).unsqueeze(0)).numpy()
                got = TorchBackend(ours, meta).run(image)[0]
                check(results, f"{name}: same uint8 BGR image, original transform vs imported meta "
                               f"({meta.input.color})", float(np.abs(got - original).max() / np.abs(original).max()),
                      1e-4, "(relative to the largest output)")

        # Geometry and post-processing through pose-edge's own path: the top-down pipeline, driven by the meta the
        # importer writes (for the decoding-only configs, the meta it would write for them), on a large image with
        # 16 person boxes inside it; the backend returns planted Gaussians (a trained network's kind of output).
        sigma = float(extra.SIGMA)
        if preset is None:
            imported_meta = with_convention(ModelMeta("simple_baseline", f"{kind}-{h_in}x{w_in}",
                                                      InputSpec(h_in, w_in), heatmap_stride=4,
                                                      extra={"sigma": sigma}), kind)
        else:
            imported_meta = meta
        codec = codec_for(imported_meta)
        check(results, f"{name}: geometry convention in the imported meta", float(imported_meta.convention != kind),
              0.0, f"({imported_meta.convention}; 1 = wrong)")
        if kind == "darkpose":
            kernel = int(config.TEST.BLUR_KERNEL)
            check(results, f"{name}: DARK blur kernel in the imported meta vs the config's TEST.BLUR_KERNEL "
                           f"({kernel})", float(abs(codec.dark_kernel - kernel)), 0.0)
            check(results, f"{name}: DARK blur weights vs OpenCV's getGaussianKernel({kernel}, 0), which the "
                           "original's cv2.GaussianBlur uses", float(np.abs(
                               dark_blur_weights(kernel) - cv2.getGaussianKernel(kernel, 0).ravel()).max()), 1e-12)
        n = 16
        image = cv2.GaussianBlur(rng.integers(0, 256, (1400, 1800, 3), dtype=np.uint8), (3, 3), 0)
        boxes = boxes_inside(rng, n, 1800, 1400)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
        cs = [box_to_center_scale(b, w_in / h_in, kind) for b in boxes]
        center, scale = np.stack([c for c, _ in cs]), np.stack([s for _, s in cs])
        planted = gaussian_heatmaps(rng, 2 * n, 17, h_hm, w_hm, sigma)
        label = f"{codec.refine}" + (f", blur kernel {codec.dark_kernel}" if codec.refine == "dark" else "")
        for flip in (False, True):
            backend = PlantedHeatmaps(imported_meta, planted)
            poses = TopDownPipeline(backend, TopDownSettings(oks_nms=None), flip=flip)(image, xyxy)
            output = planted[:n].copy()
            if flip:  # the original's validate (lib/core/function.py): flip_back, then SHIFT_HEATMAP in Simple Baselines
                flipped = flip_back(planted[n:].copy(), FLIP_PAIRS)
                if kind == "simple_baselines":
                    flipped[:, :, :, 1:] = flipped.copy()[:, :, :, 0:-1]
                output = (output + flipped) * 0.5
            original, maxvals = get_final_preds(config, output.copy(), center, scale)
            what = "with the flip test" if flip else "no flip test"
            check(results, f"{name}: keypoints, original get_final_preds vs pose-edge's top-down pipeline with the "
                           f"imported meta ({imported_meta.convention}: its crops, heatmap affine, {label}), {what}",
                  float(np.abs(poses.keypoints[..., :2] - original).max()), 0.1, f"(max image px, {n} boxes x 17)")
            if not flip:
                crops = backend.inputs[0]
                theirs = np.stack([cv2.warpAffine(image, get_affine_transform(c, s_, 0, config.MODEL.IMAGE_SIZE),
                                                  (w_in, h_in), flags=cv2.INTER_LINEAR) for c, s_ in zip(center, scale)])
                check(results, f"{name}: crops the pipeline feeds the network vs the original's warpAffine with its "
                               "get_affine_transform", float(np.abs(crops.astype(int) - theirs).max()), 1.0,
                      f"(max grey-level difference, {n} crops of {h_in}x{w_in})")
        check(results, f"{name}: flip_back (reverse W, swap left/right), pose-edge vs original",
              float(np.abs(our_flip_back(planted[n:]) - flip_back(planted[n:].copy(), FLIP_PAIRS)).max()), 0.0)

        # What decoding in pose-edge's own convention would cost these weights (the bias the convention removes).
        own = dataclasses.replace(imported_meta, convention="pose_edge")
        poses = TopDownPipeline(PlantedHeatmaps(own, planted), TopDownSettings(refine=codec.refine, oks_nms=None))(
            image, xyxy)
        original, _ = get_final_preds(config, planted[:n].copy(), center, scale)
        in_input = (poses.keypoints[..., :2] - original) / (scale[:, None, :] * 200 / np.array([w_in, h_in]))
        for axis, letter in ((0, "x"), (1, "y")):
            check(results, f"{name}: decoded with pose-edge's own convention instead, minus the original, {letter} "
                           "(input px)", float(np.mean(in_input[..., axis])), None,
                  f"(spread {np.ptp(in_input[..., axis]):.2g}; reported only)")
    return results


# ------------------------------------------------------------------------------------------------------------ KAPAO

KAPAO_CASES = [("s", "kapao-s", 1280), ("m", "kapao-m", 640), ("l", "kapao-l", 640)]  # forward size: CPU time


def _logit(p):
    import numpy as np

    return np.log(p / (1 - p))


def _plant_grids(rng, strides, anchors, num_classes, num_keypoints, input_size, region=None, people: int = 12):
    """Raw head grids (logits) [1, A*D, H/s, W/s] per level holding `people` pose objects and, near six of each
    one's keypoints, keypoint objects (64 px boxes at stride 8); every other cell has objectness logit -12, below
    every threshold. region (x0, y0, x1, y1) in input pixels: keep every keypoint and keypoint box 40 px inside it
    (so that clipping to the image changes nothing); None: anywhere on the input."""
    import numpy as np

    depth = 5 + num_classes + 2 * num_keypoints
    a = len(anchors[0])
    grids = [np.full((1, a, depth, input_size // s, input_size // s), -12.0, np.float32) for s in strides]
    x0, y0, x1, y1 = region if region is not None else (-1e9, -1e9, 1e9, 1e9)
    margin = 40 if region is not None else 0
    planted = 0
    while planted < people:
        level = int(rng.integers(1, 3))  # strides 16 and 32: anchors of person size
        s, g = strides[level], grids[level]
        anchor = int(rng.integers(a))
        gx = int(rng.integers(max(2, (x0 + margin) // s), min(g.shape[4] - 2, (x1 - margin) // s)))
        gy = int(rng.integers(max(2, (y0 + margin) // s), min(g.shape[3] - 2, (y1 - margin) // s)))
        aw, ah = anchors[level][anchor]
        kp_logits = rng.normal(0, 0.5, 2 * num_keypoints)
        kx = (4 / (1 + np.exp(-kp_logits[0::2])) - 2) * aw + gx * s
        ky = (4 / (1 + np.exp(-kp_logits[1::2])) - 2) * ah + gy * s
        if region is not None and not ((kx > x0 + margin).all() and (kx < x1 - margin).all()
                                       and (ky > y0 + margin).all() and (ky < y1 - margin).all()):
            continue
        cell = g[0, anchor, :, gy, gx]
        cell[:] = rng.normal(0, 0.5, depth)
        cell[4], cell[5], cell[6:5 + num_classes] = rng.uniform(1, 5), rng.uniform(1, 5), -6.0
        cell[5 + num_classes:] = kp_logits
        planted += 1
        for k in rng.choice(num_keypoints, 6, replace=False):
            x, y = kx[k] + rng.normal(0, 3), ky[k] + rng.normal(0, 3)
            cx = int(np.clip(x // strides[0], 0, grids[0].shape[4] - 1))
            cy = int(np.clip(y // strides[0], 0, grids[0].shape[3] - 1))
            kp_anchor = int(rng.integers(a))
            kp_cell = grids[0][0, kp_anchor, :, cy, cx]
            kp_cell[:] = rng.normal(0, 0.5, depth)
            kp_cell[0] = _logit(np.clip((x / strides[0] - cx + 0.5) / 2, 0.05, 0.95))
            kp_cell[1] = _logit(np.clip((y / strides[0] - cy + 0.5) / 2, 0.05, 0.95))
            for c, side in ((2, anchors[0][kp_anchor][0]), (3, anchors[0][kp_anchor][1])):  # (2 sig(t))^2 a = 64
                kp_cell[c] = _logit(np.clip(np.sqrt(64 / side) / 2, 0.05, 0.95))
            kp_cell[4], kp_cell[5:5 + num_classes] = rng.uniform(0, 4), -6.0
            kp_cell[6 + k] = rng.uniform(0, 4)
    return [g.reshape(1, a * depth, g.shape[3], g.shape[4]) for g in grids]


def check_kapao(checkout: Path, quick: bool) -> list:
    import copy

    import numpy as np
    import torch
    import yaml

    # Environment shim: importing its utils/plots.py downloads Arial.ttf unless ./Arial.ttf exists; offline, run
    # from a scratch folder that holds matplotlib's DejaVu Sans under that name (only drawing would use it).
    import matplotlib

    scratch = Path(tempfile.mkdtemp(prefix="kapao-check-"))
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    (scratch / "Arial.ttf").symlink_to(font)
    os.chdir(scratch)
    # Environment shim: its dataset loader uses np.int, which NumPy 1.24 removed (it meant the builtin int).
    if not hasattr(np, "int"):
        np.int = int
    sys.path.insert(0, str(checkout))
    import val
    from models.experimental import attempt_load
    from models.yolo import Model
    from utils.general import strip_optimizer
    from utils.torch_utils import ModelEMA, de_parallel

    from pose_edge.geometry import fit
    from pose_edge.models import get_preset, model_meta
    from pose_edge.models.checkpoint import load_model
    from pose_edge.models.published import import_checkpoint
    from pose_edge.runtime import kapao_decode
    from pose_edge.runtime.settings import PAPER
    from pose_edge.runtime.single_stage import postprocess_clipped

    data = yaml.safe_load((checkout / "data" / "coco-kp.yaml").read_text())
    results: list = []
    for size, preset, forward_size in KAPAO_CASES[:1] if quick else KAPAO_CASES:
        name = f"kapao yolov5{size}6"
        print(name, file=sys.stderr, flush=True)
        torch.manual_seed(0)
        model = Model(str(checkout / "models" / f"yolov5{size}6.yaml"), ch=3, nc=data["nc"],
                      num_coords=data["num_coords"])  # as train.py builds it
        randomise(model, 0)
        ema = ModelEMA(model)
        with torch.no_grad():  # a training step's worth of change, so that the EMA and the model differ
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        ema.update(model)
        with tempfile.TemporaryDirectory() as tmp:
            last = Path(tmp) / "last.pt"
            ckpt = {"epoch": 499, "best_fitness": np.array([0.6])[0], "model": copy.deepcopy(de_parallel(model)).half(),
                    "ema": copy.deepcopy(ema.ema).half(), "updates": ema.updates,
                    "optimizer": torch.optim.SGD(model.parameters(), lr=0.01).state_dict(), "wandb_id": None}
            torch.save(ckpt, last)  # train.py's checkpoint dict
            published = Path(tmp) / f"kapao_{size}_coco.pt"
            strip_optimizer(str(last), str(published))  # what train.py runs at the end: the released form
            x = torch.rand(1, 3, forward_size, forward_size, generator=torch.Generator().manual_seed(1))
            for label, path in (("train.py checkpoint (EMA under 'ema')", last),
                                ("strip_optimizer output (EMA under 'model')", published)):
                run = import_checkpoint(path, preset, Path(tmp) / f"run-{path.stem}")
                ours, meta, _ = load_model(run)
                original = attempt_load(str(path), map_location="cpu", fuse=False).eval()  # val.py's loader
                with torch.no_grad():
                    _, raw = original(x)
                    mine = ours(x)
                diff = max((m.view(r.shape[0], r.shape[1], r.shape[4], r.shape[2], r.shape[3])
                            .permute(0, 1, 3, 4, 2) - r).abs().max().item() for m, r in zip(mine, raw))
                check(results, f"{name}: raw head grids, {label} -> {preset}", diff, 0.0,
                      f"(largest abs(ours - original), FP32, input {forward_size}x{forward_size})")
            fused = attempt_load(str(published), map_location="cpu").eval()  # val.py's default: Conv+BN fused
            with torch.no_grad():
                _, raw = fused(x)
            diff = max((m.view(r.shape[0], r.shape[1], r.shape[4], r.shape[2], r.shape[3]).permute(0, 1, 3, 4, 2)
                        - r).abs().max().item() for m, r in zip(mine, raw))
            check(results, f"{name}: raw head grids vs the original with Conv+BN fused (val.py's default)", diff,
                  None, "(reported only: fusing changes float rounding)")
            theirs_anchors = original.model[-1].anchor_grid.view(-1).tolist()
            ours_anchors = [v for level in meta.anchors for wh in level for v in wh]
            check(results, f"{name}: anchors in the imported meta vs the Detect head's anchor_grid",
                  float(np.abs(np.array(ours_anchors) - np.array(theirs_anchors)).max()), 0.0)

    # Post-processing on the same raw grids: the original's Detect decode, run_nms and post_process_batch
    # (val.py, COCO settings) against pose-edge's decode, NMS and fusion, for a 640x427 image letterboxed into
    # the 1280 input (rows 213..1067). The same for every size: it depends only on strides and anchors.
    name = "kapao post-processing (any size)"
    meta = model_meta(get_preset("kapao-s"))
    detect = copy.deepcopy(original.model[-1])
    detect.m = torch.nn.ModuleList(torch.nn.Identity() for _ in detect.m)  # decode given raw grids
    detect.eval()
    settings = {"conf_thres": 0.001, "iou_thres": 0.65, "conf_thres_kp": 0.2, "iou_thres_kp": 0.25,
                "conf_thres_kp_person": 0.3, "overwrite_tol": 50, "num_coords": data["num_coords"],
                "kp_flip": data["kp_flip"], "use_kp_dets": True, "count_fused": False, "imgsz": 1280}
    image_hw = (427, 640)
    box = fit(image_hw, (1280, 1280))
    region = (box.pad[0], box.pad[1], box.pad[0] + 1280, box.pad[1] + 854)
    cases = (("inside the image", region, False), ("also across the image border", None, False),
             ("also across the image border", None, True))
    for where, planted_in, clip in cases:
        worst, differing, total, fused = 0.0, 0, 0, 0
        trial_rng = np.random.default_rng(1 if planted_in is None else 0)  # the same people with and without clip
        for trial in range(5):
            grids = _plant_grids(trial_rng, meta.strides, meta.anchors, meta.num_classes, meta.num_keypoints, 1280,
                                 planted_in)
            with torch.no_grad():
                out, _ = detect([torch.from_numpy(g.copy()) for g in grids])
            person_dets, kp_dets = val.run_nms(settings, out)
            _, poses, scores, _, _ = val.post_process_batch(settings, torch.zeros(1, 3, 1280, 1280), [],
                                                            [[image_hw]], person_dets, kp_dets)
            if clip:  # Settings.clip: the single-stage pipeline's post-processing with val.py's clipping
                rows = kapao_decode.decode(grids, meta.strides, meta.anchors, meta.num_classes, meta.num_keypoints)
                ours = postprocess_clipped(rows[0], meta.num_classes, meta.num_keypoints, box, PAPER.single_stage)
            else:
                ours = kapao_decode.postprocess(grids, meta.strides, meta.anchors, meta.num_classes,
                                                meta.num_keypoints, [box])[0]
            theirs = np.array(poses, np.float64).reshape(-1, meta.num_keypoints, 3)
            if len(theirs) != len(ours.keypoints) or not np.allclose(scores, ours.scores, atol=1e-6):
                worst = float("inf")
                continue
            error = np.abs(ours.keypoints.astype(np.float64) - theirs).max(-1)
            worst = max(worst, float(error.max(initial=0.0)))
            differing += int((error > 0.1).sum())
            total += error.size
            fused += int((theirs[..., 2] > 0).sum())
        detail = (f"(max over 5 trials of 12 planted people, {total} keypoints, {fused} of them fused from "
                  f"keypoint objects; {differing} differ by more than 0.1)")
        if planted_in is not None:
            check(results, f"{name}: keypoints (x, y, conf), original val.py post-processing vs pose-edge, "
                           f"people {where}", worst, 0.1, detail)
        elif clip:
            check(results, f"{name}: the same, people {where}, pose-edge with clip (Settings.clip, on in the paper "
                           "profiles)", worst, 0.1, detail)
        else:
            check(results, f"{name}: the same, people {where}, pose-edge without clip (its default)", worst, None,
                  detail[:-1] + ": the original clips keypoint-object boxes and the first two keypoints to the "
                  "image; reported only)")

    results += _check_rect(checkout, data)
    results += _check_tta(original, data)
    return results


def _check_rect(checkout: Path, data: dict) -> list:
    """--rect: the canvas the original's dataset loader (utils/datasets.py, rect=True, batch 1, stride 64, as val.py
    builds it) makes of images of several sizes, against pose-edge's rect letterbox (Settings.rect)."""
    import numpy as np
    from utils.datasets import LoadImagesAndLabels

    from pose_edge.geometry import letterbox, rect_input_size

    results: list = []
    name = "kapao --rect"
    print(name, file=sys.stderr, flush=True)
    # 333 x 2.56 = 852.48 and 335 x 2.56 = 857.6: the original truncates resized sizes, pose-edge rounds them.
    sizes = [(427, 640), (640, 427), (375, 500), (1500, 2000), (333, 500), (335, 500), (480, 640), (500, 500)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        images = {}
        for i, (h, w) in enumerate(sizes):
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            images[f"{i:03d}.png"] = image
            cv2_write(folder / f"{i:03d}.png", image)
        dataset = LoadImagesAndLabels(str(folder), "labels", 1280, 1, rect=True, stride=64,
                                      kp_flip=data["kp_flip"])
        shape_diff, pixel_diff, truncated, worst_truncated = 0, 0.0, [], 0.0
        for i in range(len(dataset)):
            img, _, path, _ = dataset[i]
            theirs = np.ascontiguousarray(img.numpy().transpose(1, 2, 0)[:, :, ::-1])  # RGB CHW -> BGR HWC
            image = images[Path(path).name]
            ours, _ = letterbox(image, rect_input_size(image.shape[:2], (1280, 1280), 64))
            if ours.shape != theirs.shape:
                shape_diff += 1
                continue
            diff = float(np.abs(ours.astype(int) - theirs).max())
            h, w = image.shape[:2]
            r = 1280 / max(h, w)
            if (int(h * r), int(w * r)) == (round(h * r), round(w * r)):
                pixel_diff = max(pixel_diff, diff)
            else:
                truncated.append(f"{w}x{h} resized to {int(h * r)} rows there, {round(h * r)} here")
                worst_truncated = max(worst_truncated, diff)
    check(results, f"{name}: canvas size, pose-edge's rect letterbox vs the original's loader", float(shape_diff), 0.0,
          f"(images of {len(sizes)} sizes whose canvas sizes differ)")
    check(results, f"{name}: canvas pixels where both resize to the same size", pixel_diff, 1.0,
          "(max grey-level difference)")
    check(results, f"{name}: canvas pixels where the original's truncated size is a pixel smaller",
          worst_truncated, None, f"(max grey-level difference; {'; '.join(truncated)}: the image content lies a "
          "sub-pixel apart, which pose-edge's letterbox maps back exactly; reported only)")
    return results


def cv2_write(path: Path, image) -> None:
    import cv2

    if not cv2.imwrite(str(path), image):
        raise SystemExit(f"cannot write {path}")


def _check_tta(model, data: dict) -> list:
    """Test-time augmentation: the original's scale_img (utils/torch_utils.py) against pose-edge's rescale_input on a
    1280x1280 canvas, and its _descale_pred (models/yolo.py) against descale_rows / deflip_rows on random rows, for
    val.py's --scales 0.8 1 1.2 --flips -1 3 -1."""
    import numpy as np
    import torch
    from utils.torch_utils import scale_img

    from pose_edge.runtime.single_stage import deflip_rows, descale_rows, rescale_input

    results: list = []
    name = "kapao TTA"
    print(name, file=sys.stderr, flush=True)
    rng = np.random.default_rng(0)
    canvas = cv2_blur(rng.integers(0, 256, (1, 1280, 1280, 3), dtype=np.uint8))
    x = torch.from_numpy(canvas[..., ::-1].transpose(0, 3, 1, 2).copy()).float() / 255  # val.py's input
    depth = 5 + data["nc"] + data["num_coords"]
    rows = rng.uniform(0, 1280, (1, 500, depth)).astype(np.float32)
    model.nc = data["nc"]  # train.py attaches it to the model it saves (the published files carry it)
    for scale, flips in ((0.8, None), (1.0, 3), (1.2, None)):
        if scale != 1.0:
            theirs = scale_img(x, scale, gs=64)[0].numpy().transpose(1, 2, 0)[:, :, ::-1] * 255
            ours, factor = rescale_input(canvas, scale, 64)
            check(results, f"{name}: input at scale {scale}, size, pose-edge vs scale_img",
                  float(ours.shape[1:3] != theirs.shape[:2]), 0.0, f"({ours.shape[1]}x{ours.shape[2]})")
            check(results, f"{name}: input at scale {scale}, pixels (bilinear; padding 114 vs 0.447 x 255)",
                  float(np.abs(ours[0].astype(np.float64) - theirs).max()), 2.0, "(max grey-level difference)")
        else:
            factor = np.ones(2, np.float32)
        with torch.no_grad():
            expected = model._descale_pred(torch.from_numpy(rows.copy()), flips, scale, (1280, 1280),
                                           data["kp_flip"]).numpy()
        got = descale_rows(rows, factor, data["nc"], data["num_coords"] // 2)
        if flips == 3:
            got = deflip_rows(got, 1280, data["nc"], data["num_coords"] // 2)
        check(results, f"{name}: rows of the pass at scale {scale}{' mirrored' if flips else ''}, de-scaled and "
                       "de-flipped, pose-edge vs _descale_pred", float(np.abs(got - expected).max()), 1e-3,
              "(max abs over 500 random rows, every column)")
    return results


def cv2_blur(images):
    import cv2
    import numpy as np

    return np.stack([cv2.GaussianBlur(i, (5, 5), 0) for i in images])


# ---------------------------------------------------------------------------------------------------------- report


def machine() -> dict:
    from pose_edge.bench.machine import cpu_model

    versions = {}
    for module in ("torch", "numpy", "cv2", "yaml"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a missing module is reported, not fatal
            versions[module] = "missing"
    return {"host": platform.node(), "system": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), **versions, "load": os.getloadavg()}


def commit_of(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def write_report(path: Path, runs: list, before: dict, seconds: float) -> None:
    lines = ["# `pose-edge import` checked against the original code", "",
             "Written by `scripts/check_against_originals.py`. Raw outputs must match to 0 in FP32; keypoints within "
             "0.1 px of the original post-processing, through pose-edge's own pipelines driven by the imported "
             "model's meta (its geometry convention); crops and letterboxed inputs to a grey level or two. Rows "
             "marked *info* are reported, not checked.", "",
             f"Machine: {before['cpu']}, {before['cores']} cores, {before['system']}; Python {before['python']}, "
             f"torch {before['torch']}, numpy {before['numpy']}, OpenCV {before['cv2']}, PyYAML {before['yaml']}. "
             f"Load average at the start {before['load'][0]:.1f} / {before['load'][1]:.1f} / {before['load'][2]:.1f} "
             f"(1/5/15 min); {seconds:.0f} s in all.", ""]
    for run in runs:
        lines += [f"## {run['kind']}: {run['checkout']} @ {run['commit']}", ""]
        if run.get("error"):
            lines += [f"**did not run**: {run['error']}", ""]
            continue
        lines += ["| check | value | limit | result |", "| --- | --- | --- | --- |"]
        for r in run["results"]:
            result = "info" if r["ok"] is None else ("pass" if r["ok"] else "**FAIL**")
            limit = "" if r["limit"] is None else f"{r['limit']:g}"
            lines.append(f"| {r['check']} {r['detail']} | {r['value']:.4g} | {limit} | {result} |")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="clones of the original repositories")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/check_against_originals.md"))
    parser.add_argument("--quick", action="store_true", help="one model per checkout")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # one checkout, in its own process: print the results as JSON on stdout
        checkout = args.checkouts[0].resolve()
        if args.worker == "kapao":
            results = check_kapao(checkout, args.quick)
        else:
            results = check_heatmap_models(args.worker, checkout, args.quick)
        print(json.dumps(results))
        return 0

    before, start, runs = machine(), time.perf_counter(), []
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")  # the originals' own torch.load calls predate it
    for checkout in args.checkouts:
        checkout = checkout.resolve()
        kind = detect_kind(checkout)
        run = {"kind": kind, "checkout": str(checkout), "commit": commit_of(checkout)}
        print(f"== {kind}: {checkout}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, str(checkout), "--worker", kind] +
                              (["--quick"] if args.quick else []), stdout=subprocess.PIPE, env=env, text=True)
        if proc.returncode != 0:
            run["error"] = f"the worker exited with status {proc.returncode} (its messages are above)"
        else:
            run["results"] = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(run)
    write_report(args.out, runs, before, time.perf_counter() - start)
    print(f"wrote {args.out}", file=sys.stderr)
    failed = [r for run in runs for r in run.get("results", []) if r["ok"] is False]
    return 1 if failed or any(run.get("error") for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
